"""Micro-batches: rows (or whole groups) cut by a padded-token budget, each padded only to its own
longest row. Used by every ModelAdapter; because aggregation weights come from the whole batch,
the micro-batches' gradients sum to the full-batch gradient whatever the cut."""

from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .rollout import Rollout

# What one more forward/backward call costs beyond its tokens, in padded tokens (module calls,
# the shared prompt pass): the price that keeps the bucketing from cutting tiny micro-batches.
CALL_COST_TOKENS = 128


def micro_batches(rollout: Rollout, max_tokens: Optional[int], keep_groups: bool,
                  lengths: "Optional[Tensor | list[int]]" = None) -> Iterator[list[int]]:
    """Row indices of micro-batches whose padded size (rows x longest row) stays within
    ``max_tokens``. Rows (or whole groups, with ``keep_groups``) are sorted by length and cut into
    runs by dynamic programming to minimise the padded tokens plus ``CALL_COST_TOKENS`` per run,
    so each micro-batch pads only to its own longest row; a single row or group larger than the
    budget forms its own. ``lengths``: each row's padded size if not its attention mask's sum
    (rows continuing prompts that ran once already: their completion lengths), a tensor or a list."""
    n = rollout.batch_size
    if max_tokens is None:
        yield list(range(n))
        return
    lengths = rollout.attention_mask.sum(-1) if lengths is None else lengths
    lengths = lengths.tolist() if isinstance(lengths, Tensor) else lengths
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
    """(row index, lo, hi, view) per micro-batch with at least one output token: the view holds
    those rows and only the columns [lo, hi) that are a real token in one of them, ready for a
    forward pass; write results back with ``full[rows, lo:hi] = value``.

    What the cut needs (lengths, each row's first and last real column, its output tokens) is read
    from the device once per batch. Per micro-batch nothing is read back, and the row index goes
    to the device from pinned memory without waiting, so a GPU still running one micro-batch's
    backward is not drained while the host prepares the next."""
    mask, device = rollout.attention_mask, rollout.input_ids.device
    seq = mask.shape[1]
    if seq == 0 or rollout.batch_size == 0:  # no token at all: nothing to run
        return
    cols = torch.arange(seq, device=mask.device)
    sizes = mask.sum(-1) if lengths is None else lengths.to(mask.device)
    first, last, outputs, sizes = torch.stack([torch.where(mask, cols, seq).amin(-1), torch.where(mask, cols, -1).amax(-1),
                                               rollout.completion_mask.sum(-1), sizes.long()]).tolist()
    everything = list(range(rollout.batch_size))
    for rows in micro_batches(rollout, max_tokens, keep_groups, sizes):
        if not any(outputs[r] for r in rows):
            continue
        lo, hi = min(first[r] for r in rows), max(last[r] for r in rows) + 1  # a row with an output token has real ones
        index = _to_device(torch.tensor(rows, dtype=torch.long), device)
        yield index, lo, hi, rollout._part(None if rows == everything else index, rows, lo, hi)


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` (host memory) on ``device``: through pinned memory without a wait where that is a GPU."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)
