"""Building rollouts from token lists, and stacking rollouts."""

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ..rollout import Rollout, Sample


def to_rollout(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, pad_id: int,
               logprobs: Optional[Sequence[Tensor]] = None, logprob_field: "str | tuple[str, ...]" = "old_logprobs",
               group_ids: Optional[Sequence[int]] = None, texts: Optional[Sequence[Sample]] = None,
               device: "torch.device | str" = "cpu", temperature: float = 1.0, eos_id: Optional[int] = None) -> Rollout:
    """Right-padded rows [prompt | completion | pad], completion_mask on the completion;
    ``temperature``: what the completions were sampled at (1 for dataset completions); with
    ``eos_id``, ``truncated`` marks the completions that do not end in it."""
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
    extra = {field: lp.to(device) for field in (logprob_field if isinstance(logprob_field, tuple) else (logprob_field,))} if lp is not None else {}
    if eos_id is not None:
        extra["truncated"] = torch.tensor([not c or c[-1] != eos_id for c in completion_ids], dtype=torch.bool, device=device)
    groups = torch.tensor(list(group_ids) if group_ids is not None else range(n), dtype=torch.long, device=device)
    return Rollout(ids.to(device), attn.to(device), comp.to(device), group_ids=groups, texts=tuple(texts) if texts is not None else None,
                   temperature=temperature, **extra)


def concat(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise (right-padding to the widest); fields must be filled alike."""
    if len({p.temperature for p in parts}) > 1:
        raise ValueError(f"concat: parts were sampled at different temperatures {sorted({p.temperature for p in parts})}")
    width = max(p.input_ids.shape[1] for p in parts)
    fields: dict[str, Any] = {}
    for name in parts[0].fields():
        values = []
        for p in parts:
            v = getattr(p, name)
            if v is None:
                raise ValueError(f"concat: field {name} is missing in some parts")
            if v.dim() == 2 and v.shape[1] < width:
                fill = pad_id if name == "input_ids" else (False if v.dtype == torch.bool else 0)
                v = torch.cat([v, torch.full((v.shape[0], width - v.shape[1]), fill, dtype=v.dtype, device=v.device)], 1)
            values.append(v)
        fields[name] = torch.cat(values, 0)
    texts = tuple(t for p in parts for t in (p.texts or ())) if all(p.texts is not None for p in parts) else None
    return Rollout(**fields, texts=texts, temperature=parts[0].temperature)
