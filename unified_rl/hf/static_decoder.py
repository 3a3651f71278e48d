"""A lean decode step for Llama-family models: a KV cache written in place and plain tensor ops.

A decode step of a small model spends much of its time outside its matmuls: transformers' forward
builds masks and position embeddings, concatenates (copies) every layer's KV cache and goes
through a dozen module calls per layer. Sampling is most of a GRPO step at small widths, so the
sampler decodes with this step instead, on a copy of the model's weights made per generation
(q/k/v and gate/up stacked into one matrix each; cast when a lower precision is asked for):

    x = embed(token);  for each layer:  x += o(attn(rope(q(n1 x)), rope(k(n1 x)), v(n1 x)))
                                       x += down(act(gate(n2 x)) * up(n2 x))
    logits = lm_head(norm(x))

with RMSNorm as transformers computes it (in fp32, or fp64 for fp64 models), RoPE from the
model's own rotary module (so every rope scaling type works), grouped-query attention without
repeating keys, Qwen3's per-head q/k norms, and the keys/values written in place into a cache
that grows ``GROW`` positions at a time (fp32 keys/values and attention also under bf16: on CPU
bf16 batched matmuls were slower). Finished rows leave the cache by an index select, as before.
The prefill still runs through transformers. Logits equal the model's own (tested in fp64).

On a GPU a decode step of a small model is bound by kernel launches (several hundred per token), so
there the sampler starts the decoder with ``fixed=True`` -- every cache position allocated up front,
the write position kept on the device, so each step has the same shapes and reads no host value --
and replays the step as one CUDA graph (:meth:`StaticDecoder.graphed`); rows then stay in the batch
to the end.
"""

from dataclasses import dataclass
from typing import Optional, no_type_check

import torch
import torch.nn.functional as F
from einops import repeat
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from .prefix import SHARED_PREFIX_MODELS, llama_like

FAST_DECODE_MODELS = SHARED_PREFIX_MODELS
# The cache grows by this many positions at a time. Attention reads the whole (contiguous) buffer
# with the unwritten slots masked: CPU batched matmuls over a sliced view of a longer buffer
# were up to 2x slower than over the whole buffer in our measurements.
GROW = 16


def supports_fast_decode(model: nn.Module) -> bool:
    """True for ``llama_like`` models (``FAST_DECODE_MODELS``, full attention in every layer) with the
    usual module layout, whose adapters, if any, are plain LoRA on linear layers."""
    trunk = getattr(model, "model", None)
    return (llama_like(model) and hasattr(model, "lm_head")
            and all(hasattr(trunk, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))
            and all(_plain_lora(m) for m in model.modules() if hasattr(m, "lora_A")))


def _plain_lora(m: nn.Module) -> bool:
    """A PEFT LoRA layer that :func:`_weight` can merge: on a linear layer, without DoRA."""
    return isinstance(getattr(m, "base_layer", None), nn.Linear) and not any(getattr(m, "use_dora", {}).values())


@dataclass
class _Layer:
    """One decoder layer's weights; q/k/v and gate/up fused into one matrix each (fewer, larger matmuls)."""

    n1: Tensor
    qkv: Tensor
    b_qkv: Optional[Tensor]
    o: Tensor
    b_o: Optional[Tensor]
    n2: Tensor
    gate_up: Tensor
    b_gate_up: Optional[Tensor]
    down: Tensor
    b_down: Optional[Tensor]
    qn: Optional[Tensor]
    kn: Optional[Tensor]


def _weight(m: nn.Module) -> tuple[Tensor, Optional[Tensor]]:
    """(weight, bias) of a linear layer as the forward applies it: for a PEFT LoRA layer, its base
    weight plus the active adapters' deltas B A * scale (unless merged or disabled)."""
    base = getattr(m, "base_layer", None)
    if base is None:
        return m.weight.detach(), (m.bias.detach() if m.bias is not None else None)
    weight = base.weight.detach()
    if not m.merged and not m.disable_adapters:
        for name in m.active_adapters:
            if name in m.lora_A:
                weight = weight + m.get_delta_weight(name).detach().to(weight.dtype)
    return weight, (base.bias.detach() if base.bias is not None else None)


def _fuse(linears: list[nn.Module], dtype: Optional[torch.dtype]) -> tuple[Tensor, Optional[Tensor]]:
    """One weight (and bias, zeros where a part has none) stacking ``linears``' outputs."""
    parts = [_weight(m) for m in linears]
    weight = torch.cat([w for w, _ in parts]).to(dtype or parts[0][0].dtype)
    if all(b is None for _, b in parts):
        return weight, None
    bias = torch.cat([b if b is not None else torch.zeros_like(w[:, 0]) for w, b in parts])
    return weight, bias.to(weight.dtype)


@no_type_check  # a per-token kernel on plain tensors: its shapes are checked at the step that calls it
def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """transformers' RMSNorm: normalise in fp32 (fp64 stays fp64), cast back, scale by the weight."""
    h = x if x.dtype == torch.float64 else x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class StaticDecoder:
    """Decode steps of a Llama-family ``model`` over its own KV cache (grown ``GROW`` positions at a time)."""

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype] = None):
        cfg, trunk = model.config, model.model

        def w(p: Optional[Tensor]) -> Optional[Tensor]:
            if p is None:
                return None
            return p.detach().to(dtype) if dtype is not None and p.is_floating_point() else p.detach()

        def linear(m: nn.Module) -> tuple[Optional[Tensor], Optional[Tensor]]:
            weight, bias = _weight(m)
            return w(weight), w(bias)

        self.layers = []
        for layer in trunk.layers:
            a, m = layer.self_attn, layer.mlp
            qkv, b_qkv = _fuse([a.q_proj, a.k_proj, a.v_proj], dtype)
            gate_up, b_gate_up = _fuse([m.gate_proj, m.up_proj], dtype)
            self.layers.append(_Layer(
                w(layer.input_layernorm.weight), qkv, b_qkv, *linear(a.o_proj),
                w(layer.post_attention_layernorm.weight), gate_up, b_gate_up, *linear(m.down_proj),
                w(a.q_norm.weight) if hasattr(a, "q_norm") else None, w(a.k_norm.weight) if hasattr(a, "k_norm") else None))
        self.act = trunk.layers[0].mlp.act_fn
        self.embed, self.norm = w(trunk.embed_tokens.weight), w(trunk.norm.weight)
        self.head, self.head_bias = linear(model.lm_head)
        self.rotary = trunk.rotary_emb
        self.eps = cfg.rms_norm_eps
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.dtype = self.embed.dtype
        self.acc = torch.promote_types(self.dtype, torch.float32)  # the cache and attention (bf16 batched matmuls on cache views copy them on CPU)
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.bias: Optional[Tensor] = None
        self.length = 0
        self.position: Optional[Tensor] = None  # fixed-shape mode: the write position, on the device
        self.graph: Optional["_Graphed"] = None

    def start(self, cache, attention_mask: Bool[Tensor, "prompts width"], group_size: int, max_new_tokens: int,
              fixed: bool = False) -> None:
        """Copy a transformers prefill cache (left-padded prompts) into the decoder's buffers, each
        prompt's entries repeated for its ``group_size`` rows; room for ``max_new_tokens`` more.
        ``fixed``: allocate every position now and keep the write position on the device, so a
        step has the same shapes and no host value each time (what :meth:`graphed` needs)."""
        p, width = attention_mask.shape
        n, total = p * group_size, width + max_new_tokens
        dev = attention_mask.device
        shape = (n, self.kv_heads, total if fixed else min(width + GROW, total), self.head_dim)
        self.position = torch.tensor([width], device=dev) if fixed else None
        self.keys, self.values = [], []
        for layer in cache.layers:
            for src, dst in ((layer.keys, self.keys), (layer.values, self.values)):
                buf = torch.zeros(shape, dtype=self.acc, device=dev)
                buf[:, :, :width] = repeat(src, "p h s d -> (p g) h s d", g=group_size)
                dst.append(buf)
        bias = torch.zeros((n, 1, 1, total), dtype=self.acc, device=dev)
        bias[:, 0, 0, :width].masked_fill_(~repeat(attention_mask, "p s -> (p g) s", g=group_size), float("-inf"))
        bias[:, 0, 0, width:] = float("-inf")  # unwritten positions; opened one per step
        self.bias, self.length = bias, width

    def _grow(self) -> None:
        """``GROW`` more positions: the buffers are reallocated (zeros: masked slots stay finite)."""
        b, h, cap, d = self.keys[0].shape
        new = min(cap + GROW, self.bias.shape[-1])
        for bufs in (self.keys, self.values):
            for i, old in enumerate(bufs):
                bufs[i] = torch.cat([old, old.new_zeros((b, h, new - cap, d))], 2)

    def keep(self, rows: Int[Tensor, " kept"]) -> None:
        """Drop every row not in ``rows`` (finished samples)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.bias = self.bias.index_select(0, rows)

    def step(self, tokens: Int[Tensor, " batch"], positions: Int[Tensor, " batch"]) -> Float[Tensor, "batch vocab"]:
        """Append ``tokens`` (at their RoPE ``positions``) to the cache; the next-token logits."""
        b, t = tokens.shape[0], self.length
        if t >= self.bias.shape[-1]:
            raise RuntimeError(f"StaticDecoder.step: the cache holds {self.bias.shape[-1]} positions, all used")
        if self.graph is not None:
            self.length = t + 1
            return self.graph(tokens, positions)
        if self.position is None and t >= self.keys[0].shape[2]:
            self._grow()
        self.length = t + 1
        return self._step(tokens, positions, t if self.position is None else self.position)

    def graphed(self) -> None:
        """From now on, replay each step as one CUDA graph (captured here, after :meth:`start` with
        ``fixed=True``): one launch per token instead of several hundred. Rows cannot leave then."""
        if self.position is None or not self.keys or self.keys[0].device.type != "cuda":
            raise RuntimeError("StaticDecoder.graphed: needs start(..., fixed=True) on a CUDA device")
        self.graph = _Graphed(self)

    @no_type_check  # the per-token body of step (whose shapes are checked) and of the CUDA graph's capture
    def _step(self, tokens: Int[Tensor, " batch"], positions: Int[Tensor, " batch"], t) -> Float[Tensor, "batch vocab"]:
        """One step writing at ``t``: a Python int (growing cache), or a one-element device tensor
        (fixed shapes: every op's shape is the same each step, and ``t`` advances on the device)."""
        b = tokens.shape[0]
        hq, hk, d = self.heads, self.kv_heads, self.head_dim
        fixed = isinstance(t, Tensor)
        if fixed:
            self.bias.index_fill_(-1, t, 0.0)
        else:
            self.bias[:, :, :, t] = 0.0
        cap = self.keys[0].shape[2]
        x = F.embedding(tokens, self.embed)                                   # [b, hidden]
        cos, sin = self.rotary(x[:, None], positions[:, None])                # [b, 1, d]
        cos, sin = cos.to(self.dtype), sin.to(self.dtype)
        bias = self.bias[..., :cap]                                           # [b, 1, 1, cap]
        for i, L in enumerate(self.layers):
            h = _rms(x, L.n1, self.eps)
            q, k, v = F.linear(h, L.qkv, L.b_qkv).split([hq * d, hk * d, hk * d], -1)
            q, k, v = q.view(b, hq, d), k.view(b, hk, d), v.view(b, hk, d)
            if L.qn is not None:
                q, k = _rms(q, L.qn, self.eps), _rms(k, L.kn, self.eps)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if fixed:
                self.keys[i].index_copy_(2, t, k[:, :, None].to(self.acc))
                self.values[i].index_copy_(2, t, v[:, :, None].to(self.acc))
            else:
                self.keys[i][:, :, t] = k
                self.values[i][:, :, t] = v
            keys, values = self.keys[i], self.values[i]                       # [b, hk, cap, d], whole: contiguous
            q = q.to(self.acc).view(b, hk, hq // hk, d)                       # grouped query heads share a key head
            scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale).add_(bias)
            att = torch.matmul(torch.softmax(scores, -1), values).view(b, hq * d).to(self.dtype)
            x = x + F.linear(att, L.o, L.b_o)
            gate, up = F.linear(_rms(x, L.n2, self.eps), L.gate_up, L.b_gate_up).chunk(2, -1)
            x = x + F.linear(self.act(gate) * up, L.down, L.b_down)
        if fixed:
            t.add_(1)
        return F.linear(_rms(x, self.norm, self.eps), self.head, self.head_bias)


class _Graphed:
    """A fixed-shape decode step captured as a CUDA graph; calling it copies the tokens and positions
    into the graph's inputs, replays it and returns its logits (overwritten by the next call)."""

    def __init__(self, dec: StaticDecoder):
        n, dev = dec.bias.shape[0], dec.bias.device
        self.tokens = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        at = dec.position.clone()
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up (allocations, library handles); it writes only the slot the first real step writes
            for _ in range(2):
                dec._step(self.tokens, self.positions, dec.position)
                dec.position.copy_(at)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = dec._step(self.tokens, self.positions, dec.position)
        dec.position.copy_(at)

    def __call__(self, tokens: Tensor, positions: Tensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.graph.replay()
        return self.logits


@no_type_check  # as _rms
def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)
