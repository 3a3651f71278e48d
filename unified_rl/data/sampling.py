"""Sampling completions with the KV cache, recording the sampler's log-probs.

Each prompt is prefilled **once** and its cache repeated for its G samples (a GRPO group), and
the log-probability of every sampled token under the sampler is recorded, so no extra pass is
needed for pi_old when there is one update per batch (mu = 1). Sampling is plain ancestral
sampling from softmax(logits / temperature) -- no top-k/top-p -- so the recorded log-probs are
those of the distribution the engine differentiates.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..rollout import Rollout, Sample
from .fast_decode import StaticDecoder, supports_fast_decode


@dataclass
class Generated:
    """Per sample (prompt-major, G consecutive samples per prompt): token ids and log-probs."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[Tensor]


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
             generator: Optional[torch.Generator] = None, fast_decode: bool = True) -> Generated:
    """Sample ``group_size`` completions for each prompt (or the greedy one) with the KV cache; see
    the module docstring. Llama-family models decode with ``StaticDecoder`` (``fast_decode=False``:
    every step through transformers' forward instead; same logits)."""
    if not prompts:
        raise ValueError("generate: no prompts")
    if temperature <= 0 and not greedy:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(prompts), width), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):  # left-pad so every row's next token is at the end
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attn[i, width - len(p):] = True
    n = len(prompts) * group_size  # outputs are ordinary tensors, filled in inference mode (faster decode steps)
    toks = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    lps = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
    with torch.inference_mode():
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
        decode = _decoder(model, device)
        out = decode(input_ids=ids, attention_mask=attn.long(), position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
        logits = logits.repeat_interleave(group_size, 0) if group_size > 1 else logits
        fast = None
        if fast_decode and supports_fast_decode(model):
            half = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
            fast = StaticDecoder(model, half)
            fast.start(cache, attn, group_size, max_new_tokens)
            del cache
        elif group_size > 1:  # share the prefill across the group
            cache.batch_repeat_interleave(group_size)
        if group_size > 1:
            attn = attn.repeat_interleave(group_size, 0)
        active = torch.arange(n, device=device)  # rows in the batch; finished rows leave it in bulk
        done = torch.zeros(n, dtype=torch.bool, device=device)
        next_pos = attn.long().sum(-1)
        for step in range(max_new_tokens):
            lp = torch.log_softmax(logits.float() / (1.0 if greedy else temperature), dim=-1)
            tok = lp.argmax(-1) if greedy else torch.multinomial(lp.exp(), 1, generator=generator).squeeze(1)
            toks[active, step] = tok  # a finished row's later tokens are cut at its eos below
            lps[active, step] = lp.gather(1, tok[:, None]).squeeze(1)
            done |= tok == eos_id
            n_done = int(done.sum())
            if step == max_new_tokens - 1 or n_done == len(active):
                break
            if 4 * n_done >= len(active):  # drop finished rows once they are a quarter (each drop copies the cache)
                keep = (~done).nonzero().squeeze(1)
                fast.keep(keep) if fast is not None else cache.batch_select_indices(keep)
                active, attn, next_pos, tok, done = active[keep], attn[keep], next_pos[keep], tok[keep], done[keep]
            if fast is not None:
                with torch.autocast(device.type, enabled=False):
                    logits = fast.step(tok, next_pos)
            else:
                attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
                out = decode(input_ids=tok[:, None], attention_mask=attn.long(), position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
                cache, logits = out.past_key_values, out.logits[:, -1]
            next_pos = next_pos + 1
    model.train(was_training)
    completions, logprobs = [], []
    for row, lrow in zip(toks.cpu().tolist(), lps.cpu()):
        end = row.index(eos_id) + 1 if eos_id in row else len(row)
        completions.append(row[:end])
        logprobs.append(lrow[:end])
    prompt_ids = [list(p) for p in prompts for _ in range(group_size)]
    return Generated(prompt_ids, completions, logprobs)


def to_rollout(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, pad_id: int,
               logprobs: Optional[Sequence[Tensor]] = None, logprob_field: str = "old_logprobs",
               group_ids: Optional[Sequence[int]] = None, texts: Optional[Sequence[Sample]] = None,
               device: "torch.device | str" = "cpu") -> Rollout:
    """Right-padded rows [prompt | completion | pad], completion_mask on the completion."""
    n = len(prompt_ids)
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.bool)
    comp = torch.zeros((n, width), dtype=torch.bool)
    lp = torch.zeros((n, width), dtype=torch.float32) if logprobs is not None else None
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        if not p:
            raise ValueError(f"sample {i}: empty prompt (no tokens)")
        ids[i, : len(p) + len(c)] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attn[i, : len(p) + len(c)] = True
        comp[i, len(p): len(p) + len(c)] = True
        if lp is not None:
            lp[i, len(p): len(p) + len(c)] = logprobs[i].float()
    extra = {logprob_field: lp.to(device)} if lp is not None else {}
    groups = torch.tensor(list(group_ids) if group_ids is not None else range(n), dtype=torch.long, device=device)
    return Rollout(ids.to(device), attn.to(device), comp.to(device), group_ids=groups, texts=tuple(texts) if texts is not None else None, **extra)
