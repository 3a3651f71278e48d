"""Samplers for transformers models: the lean static-cache decoder and transformers' ``generate``
(vLLM: ``vllm_sampler.py``).

Both record the sampler's log-prob of every sampled token.

Each prompt is prefilled **once** and its cache repeated for its G samples (a GRPO group), and
the log-probability of every sampled token under the sampler is recorded, so no extra pass is
needed for pi_old when there is one update per batch (mu = 1). Sampling is plain ancestral
sampling from softmax(logits / temperature) -- no top-k/top-p -- so the recorded log-probs are
those of the distribution the engine differentiates.
"""

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from einops import repeat
from torch import Tensor, nn
from transformers import GenerationConfig

from ..names import SAMPLERS, load
from ..protocols import Generated, Sampler
from .compat import CACHE_KWARG, output_cache
from .lora import unwrap
from .static_decoder import StaticDecoder, supports_fast_decode


def truncated(lp: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Sampling weights from log-probs ``lp`` [rows, vocab]: the probabilities, zero outside the
    ``top_k`` most likely tokens and then outside the smallest set holding ``top_p`` of what is left
    (transformers' order; ties at the k-th value are kept). Unnormalised (``torch.multinomial``
    normalises); with neither set, exactly ``lp.exp()``. The log-probs a sampler records stay ``lp``,
    over the whole vocabulary, so that they equal the trainer's log pi of the same token."""
    probs = lp.exp()
    if 0 < top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p < 1.0:  # as transformers' TopPLogitsWarper: drop the least likely tokens whose mass is at most 1 - top_p
        ordered, order = lp.masked_fill(probs == 0, -float("inf")).sort(dim=-1)
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[:, -1] = False
        probs = probs.masked_fill(drop.scatter(-1, order, drop), 0.0)
    return probs


CUDA_GRAPHS = True  # on a GPU, the static decoder replays each decode step as one CUDA graph (rows then stay to the end)
SYNC_EVERY = 16  # GPU decoding: tokens between looks at which rows have finished (rows past their eos are cut afterwards)


def _decoder(model: nn.Module, device: torch.device):
    """``model``'s forward; under bf16/fp16 autocast, the forward of a half-precision copy of its
    weights with autocast off: decoding runs thousands of tiny ops, and autocast would cast the
    activations before and after each of them (slower than fp32 at small widths)."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return model
    dtype = torch.get_autocast_dtype(kind)
    params = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.named_parameters()}

    def forward(**kwargs):
        with torch.autocast(kind, enabled=False):
            return torch.func.functional_call(model, params, args=(), kwargs=kwargs)

    return forward


@torch.no_grad()
def generate(model: nn.Module, prompts: Sequence[Sequence[int]], *, group_size: int = 1, max_new_tokens: int = 64,
             eos_id: int, pad_id: int, temperature: float = 1.0, greedy: bool = False,
             generator: Optional[torch.Generator] = None, fast_decode: bool = True, top_k: int = 0, top_p: float = 1.0) -> Generated:
    """Sample ``group_size`` completions for each prompt (or the greedy one) with the KV cache; see
    the module docstring. Llama-family models decode with ``StaticDecoder`` (``fast_decode=False``:
    every step through transformers' forward instead; same logits)."""
    if not prompts:
        raise ValueError("generate: no prompts")
    if temperature <= 0 and not greedy:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    model = unwrap(model)  # a PeftModel: the transformers model inside, adapters active
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if generator is not None and generator.device != device:  # a CPU generator drives a GPU draw: seed one there from it
        generator = torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    ids, attn = _left_padded(prompts, pad_id, device)
    n = len(prompts) * group_size  # outputs are ordinary tensors, filled in inference mode (faster decode steps)
    toks = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    lps = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
    with torch.inference_mode():
        decode = _decoder(model, device)
        logits, cache, fast = _prefill(model, decode, ids, attn, group_size, max_new_tokens, fast_decode)
        if group_size > 1:
            attn = repeat(attn, "p s -> (p g) s", g=group_size)
        active = torch.arange(n, device=device)  # rows in the batch; finished rows leave it in bulk
        done = torch.zeros(n, dtype=torch.bool, device=device)
        next_pos = attn.long().sum(-1)
        for step in range(max_new_tokens):
            lp = torch.log_softmax(logits.float() / (1.0 if greedy else temperature), dim=-1)
            tok = lp.argmax(-1) if greedy else torch.multinomial(truncated(lp, top_k, top_p), 1, generator=generator).squeeze(1)
            toks[active, step] = tok  # a finished row's later tokens are cut at its eos below
            lps[active, step] = lp.gather(1, tok[:, None]).squeeze(1)
            done |= tok == eos_id
            if step == max_new_tokens - 1:
                break
            if device.type == "cpu" or step % SYNC_EVERY == SYNC_EVERY - 1:  # a host sync: on a GPU every SYNC_EVERY tokens only
                n_done = int(done.sum())
                if n_done == len(active):
                    break
                if 4 * n_done >= len(active) and (fast is None or fast.graph is None):  # drop finished rows once they are a quarter
                    keep = (~done).nonzero().squeeze(1)
                    fast.keep(keep) if fast is not None else cache.batch_select_indices(keep)
                    active, attn, next_pos, tok, done = active[keep], attn[keep], next_pos[keep], tok[keep], done[keep]
            if fast is not None:
                with torch.autocast(device.type, enabled=False):
                    logits = fast.step(tok, next_pos)
            else:
                attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
                out = decode(input_ids=tok[:, None], attention_mask=attn.long(), position_ids=next_pos[:, None],
                             use_cache=True, **{CACHE_KWARG: cache})
                cache, logits = output_cache(out), out.logits[:, -1]
            next_pos = next_pos + 1
    model.train(was_training)
    completions, logprobs = [], []
    for row, lrow in zip(toks.cpu().tolist(), lps.cpu()):
        end = row.index(eos_id) + 1 if eos_id in row else len(row)  # each completion ends at its eos
        completions.append(row[:end])
        logprobs.append(lrow[:end])
    return Generated([list(p) for p in prompts for _ in range(group_size)], completions, logprobs)


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The prompts left-padded into one batch (every row's next token at the end) and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(prompts), width), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attn[i, width - len(p):] = True
    return ids, attn


def _prefill(model: nn.Module, decode, ids: Tensor, attn: Tensor, group_size: int, max_new_tokens: int, fast_decode: bool):
    """One forward over the prompts: the first token's logits (repeated over each group), and the
    cache to decode from -- a ``StaticDecoder`` for Llama-family models (CUDA graphs on a GPU), else
    transformers' cache shared across the group."""
    device = ids.device
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
    out = decode(input_ids=ids, attention_mask=attn.long(), position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = output_cache(out), out.logits[:, -1]
    logits = repeat(logits, "p v -> (p g) v", g=group_size)
    if not (fast_decode and supports_fast_decode(model)):
        if group_size > 1:  # share the prefill across the group
            cache.batch_repeat_interleave(group_size)
        return logits, cache, None
    half = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    fast = StaticDecoder(model, half)
    graph = device.type == "cuda" and CUDA_GRAPHS
    fast.start(cache, attn, group_size, max_new_tokens, fixed=graph)
    del cache
    if graph:
        with torch.autocast(device.type, enabled=False):
            fast.graphed()
    return logits, None, fast


@dataclass
class StaticCacheSampler(Sampler):
    """The portable default: a transformers prefill, then the lean static-cache decode step
    (``StaticDecoder``) for Llama-family models, transformers' forward with its KV cache for
    others; each prompt prefilled once for its group. Decodes at the autocast precision in force."""

    eos_id: int
    pad_id: int
    fast_decode: bool = True
    top_k: int = 0
    top_p: float = 1.0

    def sample(self, policy: nn.Module, prompts: Sequence[Sequence[int]], group_size: int, max_new_tokens: int,
               temperature: float, generator: Optional[torch.Generator]) -> Generated:
        """See :class:`~unified_rl.protocols.Sampler`."""
        return generate(policy, prompts, group_size=group_size, max_new_tokens=max_new_tokens, eos_id=self.eos_id, pad_id=self.pad_id,
                        temperature=temperature if temperature > 0 else 1.0, greedy=temperature == 0, generator=generator,
                        fast_decode=self.fast_decode, top_k=self.top_k, top_p=self.top_p)


@dataclass
class HFSampler(Sampler):
    """transformers' own ``model.generate`` (ancestral sampling, ``top_k`` / ``top_p`` as set, ``num_return_sequences=G``;
    the recorded log-probs are over the whole vocabulary, from its unprocessed logits).

    Its randomness comes from torch's global generator, so a draw is seeded from ``generator``
    inside ``torch.random.fork_rng`` (the caller's global RNG is left as it was): runs repeat exactly."""

    eos_id: int
    pad_id: int
    top_k: int = 0
    top_p: float = 1.0

    @torch.no_grad()
    def sample(self, policy: nn.Module, prompts: Sequence[Sequence[int]], group_size: int, max_new_tokens: int,
               temperature: float, generator: Optional[torch.Generator]) -> Generated:
        """See :class:`~unified_rl.protocols.Sampler`."""
        if not prompts:
            raise ValueError("HFSampler.sample: no prompts")
        if not temperature >= 0:
            raise ValueError(f"HFSampler.sample: temperature must be >= 0, got {temperature}")
        device = next(policy.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=device)
        attn = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):  # left-padded, as generate expects
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            attn[i, width - len(p):] = 1
        greedy = temperature == 0
        config = GenerationConfig(do_sample=not greedy, temperature=None if greedy else float(temperature), top_k=self.top_k, top_p=self.top_p,
                                  max_new_tokens=max_new_tokens, num_return_sequences=group_size, eos_token_id=self.eos_id,
                                  pad_token_id=self.pad_id, return_dict_in_generate=True, output_logits=True)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        was = policy.training
        policy.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            out = policy.generate(input_ids=ids, attention_mask=attn, generation_config=config)
        policy.train(was)
        new = out.sequences[:, width:]
        logits = torch.stack(out.logits, 1).float() / (1.0 if greedy else temperature)
        lps = torch.log_softmax(logits, -1).gather(-1, new[..., None]).squeeze(-1)
        completions, logprobs = [], []
        for row, lrow in zip(new.cpu().tolist(), lps.cpu()):
            end = row.index(self.eos_id) + 1 if self.eos_id in row else len(row)
            completions.append(row[:end])
            logprobs.append(lrow[:end])
        return Generated([list(p) for p in prompts for _ in range(group_size)], completions, logprobs)


def make_sampler(name: str, tokenizer: Any, **options) -> Sampler:
    """The sampler called ``name`` ("static", "hf" or "vllm"), with the tokenizer's eos and pad ids
    and ``options`` (vllm: ``gpu_memory_utilization``, ``max_model_len``, ``sync_every`` ...)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return load(SAMPLERS[name])(eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, **options)
