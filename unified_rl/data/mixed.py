"""A source that mixes two: GKD's on-policy fraction lambda (Agarwal et al. 2024), each batch drawn
from the ``online`` source with probability ``fraction`` and from the ``offline`` one otherwise,
by its own seeded generator (checkpointed, so a resumed run draws the same sequence)."""

from typing import Optional

import torch
from torch import nn

from ..protocols import DataSource
from ..rollout import Rollout


class MixedSource(DataSource):
    """Each batch from ``online`` (probability ``fraction``) or ``offline`` (see the module docstring)."""

    def __init__(self, online: DataSource, offline: DataSource, fraction: float, seed: int = 0):
        if not 0 <= fraction <= 1:
            raise ValueError(f"MixedSource: fraction must be in [0, 1], got {fraction}")
        self.online, self.offline, self.fraction = online, offline, fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.last_online = False

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        self.last_online = bool(torch.rand((), generator=self.generator) < self.fraction)
        return (self.online if self.last_online else self.offline).sample(policy, n)

    def metrics(self) -> dict[str, float]:
        """``data/on_policy``: 1 when the last batch came from the online source."""
        return {"data/on_policy": float(self.last_online)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "online": self.online.state_dict(), "offline": self.offline.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.online.load_state_dict(state["online"])
        self.offline.load_state_dict(state["offline"])
