"""Learning-rate schedules: linear warm-up, then constant, cosine or linear decay (no torch, so the
configuration's choices are this table's names)."""

import math
from typing import Callable

# The learning rate after warmup, as a fraction of its peak at progress p in [0, 1].
SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * min(p, 1.0))),
    "linear": lambda p: max(0.0, 1.0 - p),
}


def schedule(warmup_steps: int, total: int, kind: str) -> Callable[[int], float]:
    """The learning-rate factor of step ``step``: linear warm-up over ``warmup_steps``, then
    ``SCHEDULES[kind]`` (constant, cosine or linear decay to 0 at ``total``)."""
    decay = SCHEDULES[kind]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay((step - warmup_steps) / max(1, total - warmup_steps))

    return factor
