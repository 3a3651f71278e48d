"""The one engine: grad J = sum_{b,t} w[b,t] * GC[b,t] * grad log pi_theta(o_t | q, o_<t).

    logp = log pi_theta at completion positions only (chunked loss head, see logprobs.py)
    gc   = coefficient(rollout, logp.detach())             # no grad
    loss = -sum w * gc * logp ;  loss.backward()            # parameter .grad += -grad J

Every method -- SFT, RFT, DPO, PPO, GRPO, and any composition -- goes through these lines;
nothing here knows a method's name. Micro-batches are cut by a token budget (never splitting a
group when the coefficient couples a group's sequences); because ``weights`` come from the
whole batch, the gradients of the micro-batches sum to the full-batch gradient.
"""

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from .logprobs import DEFAULT_CHUNK_BYTES, completion_logprobs, prompt_pass, prompt_pass_logprobs, suffix_lengths
from .protocols import GradientCoefficient
from .rollout import Rollout


@dataclass(frozen=True)
class Stats:
    """What one ``backward`` computed: the surrogate loss (-J), per-token ``gc`` and ``logprobs``
    ([batch, seq], detached, 0 outside completions) and scalar metrics (see docs/metrics.md)."""

    loss: float
    gc: Float[Tensor, "batch seq"]
    logprobs: Float[Tensor, "batch seq"]
    metrics: dict[str, float] = field(default_factory=dict)


# What one more forward/backward call costs beyond its tokens, in padded tokens (module calls,
# the shared prompt pass): the price that keeps the bucketing from cutting tiny micro-batches.
CALL_COST_TOKENS = 128


def micro_batches(rollout: Rollout, max_tokens: Optional[int], keep_groups: bool,
                  lengths: Optional[Tensor] = None) -> Iterator[list[int]]:
    """Row indices of micro-batches whose padded size (rows x longest row) stays within
    ``max_tokens``. Rows (or whole groups, with ``keep_groups``) are sorted by length and cut into
    runs by dynamic programming to minimise the padded tokens plus ``CALL_COST_TOKENS`` per run,
    so each micro-batch pads only to its own longest row; a single row or group larger than the
    budget forms its own. ``lengths``: each row's padded size if not its attention mask's sum
    (rows continuing prompts that ran once already: their completion lengths)."""
    n = rollout.batch_size
    if max_tokens is None:
        yield list(range(n))
        return
    lengths = (rollout.attention_mask.sum(-1) if lengths is None else lengths).tolist()
    units: list[list[int]] = [[i] for i in range(n)]
    if keep_groups and rollout.group_ids is not None:  # whole groups stay together
        by_group: dict[int, list[int]] = {}
        for i, g in enumerate(rollout.group_ids.tolist()):
            by_group.setdefault(g, []).append(i)
        units = list(by_group.values())
    units.sort(key=lambda u: -max(lengths[i] for i in u))
    longest = [max(lengths[i] for i in u) for u in units]
    # best[j]: least cost of cutting units[:j]; a run units[i:j] pads its rows to longest[i].
    m = len(units)
    first_row = np.concatenate([[0], np.cumsum([len(u) for u in units])])
    best, cut = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=np.int64)
    best[0] = 0.0
    for i in range(m):  # best[i] is final here: relax every run that starts at unit i
        window = min(m - i, max(1, max_tokens // max(longest[i], 1)))  # a run holds at least one row per unit
        rows = first_row[i + 1 : i + 1 + window] - first_row[i]
        fits = rows * longest[i] <= max_tokens
        fits[0] = True  # a lone unit over the budget forms its own run
        rows = rows[: int(fits.sum())]  # rows grow with j: the runs that fit are a prefix
        cost = best[i] + rows * longest[i] + CALL_COST_TOKENS
        span = slice(i + 1, i + 1 + len(rows))
        better = cost < best[span]
        best[span] = np.where(better, cost, best[span])
        cut[span] = np.where(better, i, cut[span])
    cut = cut.tolist()
    bounds, j = [], len(units)
    while j:
        bounds.append((cut[j], j))
        j = cut[j]
    for i, j in reversed(bounds):
        yield [r for u in units[i:j] for r in u]


def micro_batch_views(rollout: Rollout, max_tokens: Optional[int], keep_groups: bool,
                      lengths: Optional[Tensor] = None) -> Iterator[tuple[Tensor, int, int, Rollout]]:
    """(row index, lo, hi, view) per micro-batch: the view holds those rows and only the columns
    [lo, hi) that are a real token in one of them, ready for a forward pass; write results back
    with ``full[rows, lo:hi] = value``."""
    everything = list(range(rollout.batch_size))
    for rows in micro_batches(rollout, max_tokens, keep_groups, lengths):
        sel = rollout if rows == everything else rollout.select(rows)
        lo, hi = sel.used_columns()
        yield torch.tensor(rows, device=rollout.input_ids.device), lo, hi, sel.columns(lo, hi)


def micro_batch_logprobs(model: nn.Module, rollout: Rollout, *, max_tokens: Optional[int], keep_groups: bool,
                         temperature: float = 1.0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         share_prefix: bool = True) -> Iterator[tuple[Tensor, int, int, Rollout, Tensor]]:
    """(row index, lo, hi, view, logp) per micro-batch with completion tokens: logp is
    ``completion_logprobs`` of the view. With ``share_prefix``, the batch's distinct prompts run
    once when they fit in ``max_tokens`` and micro-batches are cut by completion length; a caller
    that differentiates must run each logp's backward before asking for the next micro-batch (the
    prompt pass's own backward runs when the last one is done)."""
    prompts = prompt_pass(model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask,
                          max_tokens=max_tokens) if share_prefix else None
    lengths = suffix_lengths(prompts) if prompts is not None else None
    for idx, lo, hi, mb in micro_batch_views(rollout, max_tokens, keep_groups, lengths):
        if mb.num_completion_tokens == 0:
            continue
        if prompts is not None:
            logp = prompt_pass_logprobs(model, prompts, idx, mb.completion_mask, temperature=temperature, chunk_bytes=chunk_bytes)
        else:
            logp = completion_logprobs(model, mb.input_ids, mb.attention_mask, mb.completion_mask, temperature=temperature,
                                       chunk_bytes=chunk_bytes, share_prefix=share_prefix)
        yield idx, lo, hi, mb, logp
    if prompts is not None:
        prompts.finish()


def backward(
    model: nn.Module,
    rollout: Rollout,
    coefficient: GradientCoefficient,
    *,
    max_tokens: Optional[int] = None,
    temperature: float = 1.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    share_prefix: bool = True,
) -> Stats:
    """Accumulate parameter ``.grad`` += -grad J for a prepared rollout; return :class:`Stats`.

    ``rollout`` must have ``weights`` (run ``coefficient.prepare`` first). ``max_tokens`` caps the
    padded tokens per forward pass; ``temperature`` must match the sampler's. ``share_prefix``:
    rows that continue the same prompt run it once (prefix.py) -- once for the whole batch when
    the prompts fit in ``max_tokens``, then micro-batches are cut by completion length; same gradient.
    """
    if rollout.weights is None:
        raise ValueError("engine.backward: Rollout.weights is None; call coefficient.prepare(rollout) first")
    gc_full = torch.zeros(rollout.input_ids.shape, dtype=torch.float64, device=rollout.input_ids.device)
    logp_full = torch.zeros_like(gc_full)
    loss_total = 0.0
    keep_groups = bool(getattr(coefficient, "couples_group", False))
    for idx, lo, hi, mb, logp in micro_batch_logprobs(model, rollout, max_tokens=max_tokens, keep_groups=keep_groups,
                                                      temperature=temperature, chunk_bytes=chunk_bytes, share_prefix=share_prefix):
        with torch.no_grad():
            gc = coefficient(mb, logp.detach())
        bad = mb.completion_mask & ~torch.isfinite(gc)
        if bool(bad.any()):
            b, t = bad.nonzero()[0].tolist()
            raise FloatingPointError(f"engine.backward: gradient coefficient is {gc[b, t].item()} at sample {int(idx[b])}, position {lo + t}")
        loss = -(mb.weights.to(logp.dtype) * gc.to(logp.dtype) * logp).sum()
        loss.backward()
        loss_total += float(loss.detach())
        gc_full[idx, lo:hi] = gc.detach().to(gc_full.dtype)
        logp_full[idx, lo:hi] = logp.detach().to(gc_full.dtype)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    dtype = torch.promote_types(dtype, torch.float32)
    gc_full, logp_full = gc_full.to(dtype), logp_full.to(dtype)
    metrics = {"loss": loss_total, "tokens": float(rollout.num_completion_tokens)}
    if hasattr(coefficient, "metrics") and rollout.num_completion_tokens:
        metrics.update(coefficient.metrics(rollout, logp_full, gc_full))
    return Stats(loss_total, gc_full, logp_full, metrics)
