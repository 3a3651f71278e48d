"""log pi_theta(o_t | q, o_<t) from a linear language-model head, without the full fp32 logits.

The head is applied in chunks of completion positions inside one autograd function: the forward
keeps only each row's log-sum-exp, the backward recomputes each chunk's logits and forms
d logp / d logits = onehot - softmax on the fly. Peak loss-head memory is O(chunk * vocab)
instead of O(batch * seq * vocab), whatever the vocabulary. Logits are accumulated in at least
fp32 (bf16 models get an fp32 log-softmax). Pure torch: the core's piece of the log-prob path.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

DEFAULT_CHUNK_BYTES = 64 * 2**20  # on CPU
CUDA_CHUNK_BYTES = 2**30  # on a GPU: each chunk also adds a [vocab, hidden] weight gradient, so small chunks cost more
# than their matmuls there (at 64 MiB, 110 positions of a 152k vocabulary, that addition dominated the head's time)


def default_chunk_bytes(device: torch.device) -> int:
    """The chunked head's working memory when none is given: 64 MiB on CPU, 1 GiB on a GPU."""
    return CUDA_CHUNK_BYTES if device.type == "cuda" else DEFAULT_CHUNK_BYTES


class _LinearLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int, temperature: float):  # type: ignore[override]
        kind = hidden.device.type
        ctx.autocast = (kind, torch.get_autocast_dtype(kind), torch.is_autocast_enabled(kind))  # replayed in backward
        hidden_in, weight_in, bias_in = hidden, weight, bias
        hidden, weight, bias = _autocast_once(ctx.autocast, hidden, weight, bias)
        acc = torch.promote_types(hidden_in.dtype, torch.float32)
        n = hidden.shape[0]
        out = torch.empty(n, dtype=acc, device=hidden.device)
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        for s in range(0, n, chunk):
            logits = F.linear(hidden[s : s + chunk], weight, bias).to(acc)
            if temperature != 1.0:
                logits = logits / temperature
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden_in, weight_in, bias_in if bias_in is not None else torch.empty(0), targets, lse)
        ctx.chunk, ctx.temperature, ctx.has_bias = chunk, temperature, bias_in is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        kind, dtype, enabled = ctx.autocast
        with torch.autocast(kind, dtype=dtype, enabled=enabled):  # the head's matmuls at the forward's precision
            return _LinearLogProb._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        hidden, weight_in, bias, targets, lse = ctx.saved_tensors
        bias_in = bias if ctx.has_bias else None
        out_dtype = hidden.dtype
        hidden, weight, bias = _autocast_once(ctx.autocast, hidden, weight_in, bias_in)
        chunk, temp = ctx.chunk, ctx.temperature
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden, dtype=out_dtype) if need_h else None
        grad_w = torch.zeros_like(weight_in, dtype=torch.promote_types(weight_in.dtype, torch.float32)) if need_w else None
        grad_b = torch.zeros_like(bias_in, dtype=grad_w.dtype if grad_w is not None else bias_in.dtype) if (need_b and bias_in is not None) else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            g = grad_out[s : s + chunk].to(lse.dtype)
            logits = F.linear(h, weight, bias).to(lse.dtype)
            if temp != 1.0:
                logits = logits / temp
            # d logp / d logits = onehot(target) - softmax; scaled by the incoming gradient.
            gl = torch.exp_(logits.sub_(lse[s : s + chunk, None])).mul_(-g[:, None])
            gl.scatter_add_(1, targets[s : s + chunk, None], g[:, None])
            if temp != 1.0:
                gl = gl / temp
            if grad_b is not None:
                grad_b += gl.sum(0)
            gl = gl.to(hidden.dtype)  # the matmul dtype (autocast's, when it is on)
            if grad_h is not None:
                grad_h[s : s + chunk] = gl @ weight
            if grad_w is not None:
                grad_w += (gl.t() @ h).to(grad_w.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight_in.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias_in.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def _autocast_once(state, hidden: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """The head's inputs cast once to autocast's dtype, as autocast would cast them for each chunk's
    matmul (the same values; one copy of the vocabulary-sized weight instead of one per chunk)."""
    _, dtype, enabled = state
    if not enabled:
        return hidden, weight, bias
    return hidden.to(dtype), weight.to(dtype), (bias.to(dtype) if bias is not None else None)


def linear_logprobs(
    hidden: Float[Tensor, "tokens hidden"],
    weight: Float[Tensor, "vocab hidden"],
    bias: Optional[Float[Tensor, "vocab"]],
    targets: Int[Tensor, "tokens"],
    *,
    temperature: float = 1.0,
    chunk_bytes: Optional[int] = None,
) -> Float[Tensor, "tokens"]:
    """log softmax(hidden @ weight.T + bias)[targets], chunked so no [tokens, vocab] tensor is kept;
    ``chunk_bytes`` of fp32 logits at a time (None: :func:`default_chunk_bytes`)."""
    chunk = max(1, (chunk_bytes or default_chunk_bytes(hidden.device)) // (4 * weight.shape[0]))
    return _LinearLogProb.apply(hidden, weight, bias, targets, chunk, float(temperature))


def on_mask(completion_mask: Bool[Tensor, "batch seq"], logp: Float[Tensor, " tokens"]) -> Float[Tensor, "batch seq"]:
    """The flat completion-token log-probs laid out on ``completion_mask`` (0 elsewhere), keeping the graph."""
    full = torch.zeros(completion_mask.shape, dtype=logp.dtype, device=logp.device)
    return full.masked_scatter(completion_mask, logp) if logp.numel() else full + 0 * logp.sum()


def logits_logprobs(logits: Float[Tensor, "tokens vocab"], targets: Int[Tensor, " tokens"], temperature: float = 1.0) -> Float[Tensor, " tokens"]:
    """log softmax(logits / temperature)[targets] from full logits (at least fp32), for models
    whose head is not a plain linear map."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
