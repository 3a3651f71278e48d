"""A lean decode step for Llama-family models: a preallocated KV cache and plain tensor ops.

A decode step of a small model is dominated by per-call overhead, not arithmetic: transformers'
forward builds masks and position embeddings, concatenates every layer's KV cache and goes
through a dozen module calls per layer. Sampling is most of a GRPO step at small widths, so the
sampler decodes with this step instead, reading the model's own weights (no copy unless a lower
precision is asked for):

    x = embed(token);  for each layer:  x += o(attn(rope(q(n1 x)), rope(k(n1 x)), v(n1 x)))
                                       x += down(act(gate(n2 x)) * up(n2 x))
    logits = lm_head(norm(x))

with RMSNorm as transformers computes it (in fp32, or fp64 for fp64 models), RoPE from the
model's own rotary module (so every rope scaling type works), grouped-query attention without
repeating keys, Qwen3's per-head q/k norms, and the keys/values written in place into a cache
sized for the whole completion. Finished rows leave the cache by an index select, as before.
The prefill still runs through transformers. Logits equal the model's own (tested in fp64).
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..prefix import SHARED_PREFIX_MODELS

FAST_DECODE_MODELS = SHARED_PREFIX_MODELS


def supports_fast_decode(model: nn.Module) -> bool:
    """True for the architectures in ``FAST_DECODE_MODELS`` with full attention in every layer."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in FAST_DECODE_MODELS:
        return False
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return False
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ())):
        return False
    trunk = getattr(model, "model", None)
    return all(hasattr(trunk, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")) and hasattr(model, "lm_head")


@dataclass
class _Layer:
    n1: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    o: Tensor
    n2: Tensor
    gate: Tensor
    up: Tensor
    down: Tensor
    bq: Optional[Tensor]
    bk: Optional[Tensor]
    bv: Optional[Tensor]
    bo: Optional[Tensor]
    b_gate: Optional[Tensor]
    b_up: Optional[Tensor]
    b_down: Optional[Tensor]
    qn: Optional[Tensor]
    kn: Optional[Tensor]


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """transformers' RMSNorm: normalise in fp32 (fp64 stays fp64), cast back, scale by the weight."""
    h = x if x.dtype == torch.float64 else x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class StaticDecoder:
    """Decode steps of a Llama-family ``model`` over a KV cache allocated once per generation."""

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype] = None):
        cfg, trunk = model.config, model.model

        def w(p: Optional[Tensor]) -> Optional[Tensor]:
            if p is None:
                return None
            return p.detach().to(dtype) if dtype is not None and p.is_floating_point() else p.detach()

        self.layers = []
        for layer in trunk.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                w(layer.input_layernorm.weight), w(a.q_proj.weight), w(a.k_proj.weight), w(a.v_proj.weight), w(a.o_proj.weight),
                w(layer.post_attention_layernorm.weight), w(m.gate_proj.weight), w(m.up_proj.weight), w(m.down_proj.weight),
                w(a.q_proj.bias), w(a.k_proj.bias), w(a.v_proj.bias), w(a.o_proj.bias),
                w(m.gate_proj.bias), w(m.up_proj.bias), w(m.down_proj.bias),
                w(a.q_norm.weight) if hasattr(a, "q_norm") else None, w(a.k_norm.weight) if hasattr(a, "k_norm") else None))
        self.act = trunk.layers[0].mlp.act_fn
        self.embed, self.norm, self.head = w(trunk.embed_tokens.weight), w(trunk.norm.weight), w(model.lm_head.weight)
        self.head_bias = w(getattr(model.lm_head, "bias", None))
        self.rotary = trunk.rotary_emb
        self.eps = cfg.rms_norm_eps
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.dtype = self.embed.dtype
        self.acc = torch.promote_types(self.dtype, torch.float32)  # softmax accumulation
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.bias: Optional[Tensor] = None
        self.length = 0

    def start(self, cache, attention_mask: Bool[Tensor, "prompts width"], group_size: int, max_new_tokens: int) -> None:
        """Copy a transformers prefill cache (left-padded prompts) into buffers with room for
        ``max_new_tokens`` more positions, each prompt's entries repeated for its ``group_size`` rows."""
        p, width = attention_mask.shape
        n, total = p * group_size, width + max_new_tokens
        dev = attention_mask.device
        self.keys, self.values = [], []
        for layer in cache.layers:
            for src, dst in ((layer.keys, self.keys), (layer.values, self.values)):
                buf = torch.empty((n, self.kv_heads, total, self.head_dim), dtype=self.dtype, device=dev)
                buf.view(p, group_size, self.kv_heads, total, self.head_dim)[..., :width, :] = src[:, None]
                dst.append(buf)
        bias = torch.zeros((n, 1, 1, total), dtype=self.dtype, device=dev)
        bias[:, 0, 0, :width].masked_fill_(~attention_mask.repeat_interleave(group_size, 0), float("-inf"))
        self.bias, self.length = bias, width

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
        hq, hk, d = self.heads, self.kv_heads, self.head_dim
        x = F.embedding(tokens, self.embed)                                   # [b, hidden]
        cos, sin = self.rotary(x[:, None], positions[:, None])                # [b, 1, d]
        cos, sin = cos.to(self.dtype), sin.to(self.dtype)
        bias = self.bias[..., : t + 1]                                        # [b, 1, 1, t+1]
        for i, L in enumerate(self.layers):
            h = _rms(x, L.n1, self.eps)
            q = F.linear(h, L.q, L.bq).view(b, hq, d)
            k = F.linear(h, L.k, L.bk).view(b, hk, d)
            v = F.linear(h, L.v, L.bv).view(b, hk, d)
            if L.qn is not None:
                q, k = _rms(q, L.qn, self.eps), _rms(k, L.kn, self.eps)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[i][:, :, t] = k
            self.values[i][:, :, t] = v
            keys, values = self.keys[i][:, :, : t + 1], self.values[i][:, :, : t + 1]   # [b, hk, t+1, d]
            q = q.view(b, hk, hq // hk, d)                                    # grouped query heads share a key head
            scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale).add_(bias)
            probs = torch.softmax(scores, -1, dtype=self.acc).to(self.dtype)
            att = torch.matmul(probs, values).view(b, hq * d)
            x = x + F.linear(att, L.o, L.bo)
            h = _rms(x, L.n2, self.eps)
            x = x + F.linear(self.act(F.linear(h, L.gate, L.b_gate)) * F.linear(h, L.up, L.b_up), L.down, L.b_down)
        self.length = t + 1
        return F.linear(_rms(x, self.norm, self.eps), self.head, self.head_bias)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)
