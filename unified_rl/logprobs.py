"""log pi_theta(o_t | q, o_<t) at completion positions only, without the full fp32 logits.

The language-model head is applied in chunks of completion positions inside one autograd
function: the forward keeps only each row's log-sum-exp, the backward recomputes each chunk's
logits and forms d logp / d logits = onehot - softmax on the fly. Peak loss-head memory is
O(chunk * vocab) instead of O(batch * seq * vocab), whatever the vocabulary.
Logits are accumulated in at least fp32 (bf16 models get an fp32 log-softmax).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from .prefix import PrefixPlan, PromptPass, plan_shared_prefix, supports_shared_prefix

# Configs whose head is not a plain linear map of the last hidden state.
_HEAD_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
DEFAULT_CHUNK_BYTES = 64 * 2**20


class _LinearLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int, temperature: float):  # type: ignore[override]
        acc = torch.promote_types(hidden.dtype, torch.float32)
        n = hidden.shape[0]
        out = torch.empty(n, dtype=acc, device=hidden.device)
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        for s in range(0, n, chunk):
            logits = F.linear(hidden[s : s + chunk], weight, bias).to(acc)
            if temperature != 1.0:
                logits = logits / temperature
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.chunk, ctx.temperature, ctx.has_bias = chunk, temperature, bias is not None
        kind = hidden.device.type
        ctx.autocast = (kind, torch.get_autocast_dtype(kind), torch.is_autocast_enabled(kind))  # replayed in backward
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        kind, dtype, enabled = ctx.autocast
        with torch.autocast(kind, dtype=dtype, enabled=enabled):  # the head's matmuls at the forward's precision
            return _LinearLogProb._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        chunk, temp = ctx.chunk, ctx.temperature
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=grad_w.dtype if grad_w is not None else bias.dtype) if (need_b and bias is not None) else None
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
            gl = gl.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s : s + chunk] = gl @ weight
            if grad_w is not None:
                grad_w += (gl.t() @ h).to(grad_w.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def linear_logprobs(
    hidden: Float[Tensor, "tokens hidden"],
    weight: Float[Tensor, "vocab hidden"],
    bias: Optional[Float[Tensor, "vocab"]],
    targets: Int[Tensor, "tokens"],
    *,
    temperature: float = 1.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Float[Tensor, "tokens"]:
    """log softmax(hidden @ weight.T + bias)[targets], chunked so no [tokens, vocab] tensor is kept."""
    chunk = max(1, chunk_bytes // (4 * weight.shape[0]))
    return _LinearLogProb.apply(hidden, weight, bias, targets, chunk, float(temperature))


def _split_head(model: nn.Module) -> "tuple[nn.Module, nn.Linear] | None":
    """(trunk, lm_head) of a transformers causal LM whose logits are lm_head(last hidden)."""
    get_head = getattr(model, "get_output_embeddings", None)
    trunk = getattr(model, "base_model", None)
    head = get_head() if callable(get_head) else None
    config = getattr(model, "config", None)
    if head is None or trunk is None or trunk is model or not isinstance(head, nn.Linear):
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in _HEAD_MODIFIERS):
        return None
    return trunk, head


def completion_logprobs(
    model: nn.Module,
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Bool[Tensor, "batch seq"],
    completion_mask: Bool[Tensor, "batch seq"],
    *,
    temperature: float = 1.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    share_prefix: bool = True,
) -> Float[Tensor, "batch seq"]:
    """log pi(input_ids[b, t] | input_ids[b, :t]) where completion_mask, else 0; differentiable.

    Position ids follow the attention mask (cumsum - 1), as ``generate`` does, so left- or
    right-padded rows give the same values. Works with any ``transformers`` causal LM; models
    with a non-linear head (soft-capping, logit scaling) fall back to full logits. With
    ``share_prefix``, rows that share a prompt run it once (see prefix.py; Llama-like models).
    """
    shared = _shared_prompts(model, input_ids, attention_mask, completion_mask) if share_prefix else None
    if shared is not None:  # each distinct prompt once, its KV gathered per row
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return prompt_pass_logprobs(model, PromptPass(*shared), rows, completion_mask, temperature=temperature, chunk_bytes=chunk_bytes)
    split = _split_head(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
    target_mask = completion_mask[:, 1:]
    targets = input_ids[:, 1:][target_mask]
    out = (split[0] if split is not None else model)(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=position_ids)
    picked = (out.last_hidden_state if split is not None else out.logits)[:, :-1][target_mask]
    if split is not None:
        head = split[1]
        logp = linear_logprobs(picked, head.weight, head.bias, targets, temperature=temperature, chunk_bytes=chunk_bytes)
    else:
        picked = picked.to(torch.promote_types(picked.dtype, torch.float32)) / temperature
        logp = picked.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return _on_mask(completion_mask, logp)


def _on_mask(completion_mask: Bool[Tensor, "batch seq"], logp: Float[Tensor, " tokens"]) -> Float[Tensor, "batch seq"]:
    """The flat completion-token log-probs laid out on ``completion_mask`` (0 elsewhere), keeping the graph."""
    full = torch.zeros(completion_mask.shape, dtype=logp.dtype, device=logp.device)
    return full.masked_scatter(completion_mask, logp) if logp.numel() else full + 0 * logp.sum()


def _shared_prompts(model: nn.Module, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                    completion_mask: Bool[Tensor, "batch seq"]) -> "tuple[nn.Module, PrefixPlan] | None":
    """(trunk, plan) where rows share prompts and the model can run them once (prefix.py), else None."""
    split = _split_head(model)
    if split is None or not supports_shared_prefix(model):
        return None
    plan = plan_shared_prefix(input_ids, attention_mask, completion_mask)
    return (split[0], plan) if plan is not None else None


def prompt_pass(model: nn.Module, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                completion_mask: Bool[Tensor, "batch seq"], *, max_tokens: Optional[int] = None) -> Optional[PromptPass]:
    """The batch's distinct prompts run once for all its micro-batches (see prefix.py), or None
    where ``completion_logprobs`` must run per micro-batch: no two rows share a prompt, the model
    is not Llama-like, or the prompts alone exceed ``max_tokens`` padded tokens."""
    shared = _shared_prompts(model, input_ids, attention_mask, completion_mask)
    if shared is None or (max_tokens is not None and shared[1].prefix_ids.numel() > max_tokens):
        return None
    return PromptPass(*shared, split=True)


def suffix_lengths(prompts: PromptPass) -> Int[Tensor, " batch"]:
    """Tokens each row adds after its prompt: the padded size of its part of a micro-batch."""
    return prompts.plan.suffix_mask.sum(-1)


def prompt_pass_logprobs(model: nn.Module, prompts: PromptPass, rows: Int[Tensor, " rows"],
                         completion_mask: Bool[Tensor, "rows seq"], *, temperature: float = 1.0,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Float[Tensor, "rows seq"]:
    """``completion_logprobs`` for ``rows`` of the batch ``prompts`` was made from, laid out on
    ``completion_mask`` (those rows' completion positions, any column window); differentiable."""
    hidden, completion = prompts.hidden(rows)
    head = model.get_output_embeddings()
    targets = prompts.plan.suffix_ids[rows, : completion.shape[1]][completion]
    logp = linear_logprobs(hidden[completion], head.weight, head.bias, targets, temperature=temperature, chunk_bytes=chunk_bytes)
    if logp.numel() != int(completion_mask.sum()):
        raise ValueError(f"prompt_pass_logprobs: {logp.numel()} completion tokens in the prompt plan, "
                         f"{int(completion_mask.sum())} in completion_mask")
    return _on_mask(completion_mask, logp)
