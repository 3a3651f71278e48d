"""DAPO's dynamic sampling as a DataSource wrapper: keep only the groups that can teach.

A group whose scored rewards are all equal has a group-relative advantage of exactly 0: it costs
a forward and backward and moves nothing. ``DynamicSampling`` scores each drawn batch with the
run's reward, keeps the groups with a reward spread (the rule of ``coefficients.groups_with_spread``),
and draws again until ``n`` groups are kept or ``max_batches`` batches were drawn. It reports how
many groups were generated and kept (``dynamic/*`` metrics). If no group in ``max_batches`` batches
had a spread, the last batch is returned as it is (its advantages are 0: the step changes nothing,
and the loop's no-signal warning says so).
"""

from typing import Any, Optional

import torch

from ..coefficients._groups import _spread, group_index
from ..protocols import DataSource, RewardFunction
from ..rollout import Rollout
from .collate import concat


class DynamicSampling(DataSource):
    """``inner``'s groups, filtered to those whose rewards (by ``judge``) are not all equal."""

    def __init__(self, inner: DataSource, judge: RewardFunction, pad_id: int, max_batches: int = 4):
        if not isinstance(max_batches, int) or max_batches < 1:
            raise ValueError(f"DynamicSampling: max_batches must be an integer >= 1, got {max_batches!r}")
        self.inner, self.judge, self.pad_id, self.max_batches = inner, judge, pad_id, max_batches
        self.last: dict[str, float] = {}

    def sample(self, policy: Optional[Any], n: int) -> Rollout:
        parts: list[Rollout] = []
        kept = generated = 0
        batch = None
        for drawn in range(1, self.max_batches + 1):
            batch = self.inner.sample(policy, n)
            batch = self.judge(batch, batch.texts)
            idx, k = group_index(batch.group_ids)
            valid = batch.scored if batch.scored is not None else torch.ones_like(batch.rewards, dtype=torch.bool)
            _, signal = _spread(batch.rewards.to(torch.float64), idx, k, valid)
            generated += k
            for g in signal.nonzero().squeeze(1).tolist()[: n - kept]:
                rows = (idx == g).nonzero().squeeze(1)
                part = batch.select(rows)
                parts.append(part.replace(group_ids=torch.full_like(part.group_ids, kept)))
                kept += 1
            if kept >= n:
                break
        self.last = {"dynamic/generated_groups": float(generated), "dynamic/kept_groups": float(kept), "dynamic/batches": float(drawn)}
        return concat(parts, self.pad_id) if parts else batch

    def metrics(self) -> dict[str, float]:
        return dict(self.last)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
