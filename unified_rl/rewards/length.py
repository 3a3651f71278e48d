"""DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), a length reward added to the task's.

With L = ``max_length`` and C = ``buffer``, a completion of |o| tokens gets
    0                        if |o| <= L - C
    ((L - C) - |o|) / C      if L - C < |o| <= L      (a linear ramp from 0 to -1)
    -1                       if |o| > L
(the same numbers as ``trl.rewards.get_soft_overlong_punishment``). Combine it with the task's
reward: ``WeightedSum([(1.0, task), (1.0, overlong_penalty(48, 8))])``.
"""

from dataclasses import dataclass
from typing import Sequence

import torch

from ..protocols import RewardFunction
from ..rollout import Rollout, Sample


@dataclass(frozen=True)
class OverlongPenalty(RewardFunction):
    """The soft overlong punishment of a completion's token count (eos included)."""

    max_length: int
    buffer: int

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        n = rollout.completion_lengths.to(torch.float32)
        start = self.max_length - self.buffer
        ramp = (start - n) / self.buffer if self.buffer else torch.zeros_like(n)
        r = torch.where(n <= start, torch.zeros_like(n), torch.where(n <= self.max_length, ramp, torch.full_like(n, -1.0)))
        return rollout.replace(rewards=r)


def overlong_penalty(max_length: int, buffer: int) -> OverlongPenalty:
    """DAPO's soft overlong punishment: 0 up to ``max_length - buffer`` tokens, then down to -1 at ``max_length``."""
    if not (isinstance(max_length, int) and isinstance(buffer, int) and 0 <= buffer < max_length):
        raise ValueError(f"overlong_penalty: need integers 0 <= buffer < max_length, got max_length={max_length!r}, buffer={buffer!r}")
    return OverlongPenalty(max_length, buffer)
