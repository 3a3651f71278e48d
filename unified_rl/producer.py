"""Where rollouts come from: the :class:`RolloutProducer` protocol the Trainer draws from, and
:class:`SourceProducer`, which runs a :class:`~unified_rl.protocols.DataSource` (supervised, sampled,
pairs, dynamic) and adds what the sampling policy knows of its samples (log pi_old, entropies)."""

import contextlib
import time
from typing import Callable, ContextManager, Protocol, runtime_checkable

from torch import nn

from . import engine
from .engine import ExecutionPlan
from .precision import autocast
from .protocols import DataSource, Stateful
from .rollout import Rollout


@runtime_checkable
class RolloutProducer(Stateful, Protocol):
    """Yields rollouts ready to be scored and prepared. Optionally ``policy_updated()`` (called after
    every update: a producer that samples beside the learner takes the new weights there) and
    ``close()`` (called when the run ends, however it ends)."""

    def produce(self, n: int) -> Rollout:
        """Rollouts for ``n`` questions."""

    def metrics(self) -> dict[str, float]:
        """Numbers about the last :meth:`produce` (its phase times ``time/generate`` and
        ``time/old_logprobs`` in seconds, and the source's own)."""


class SourceProducer:
    """A :class:`RolloutProducer` over ``source``: samples with ``policy`` at ``precision`` inside
    ``full_weights()`` (FSDP2 gathers the weights there), then fills log pi_old and the entropies
    where ``needs`` names them and the source did not."""

    def __init__(self, source: DataSource, policy: nn.Module, needs: frozenset, plan: ExecutionPlan, precision: str = "fp32",
                 full_weights: Callable[[], ContextManager] = contextlib.nullcontext):
        self.source, self.policy, self.needs, self.plan, self.precision, self.full_weights = source, policy, needs, plan, precision, full_weights
        self._times: dict[str, float] = {}

    def produce(self, n: int) -> Rollout:
        """See :class:`RolloutProducer`."""
        t0 = time.perf_counter()
        with self.full_weights():
            with autocast(self.policy, self.precision):
                rollout = self.source.sample(self.policy, n)
            t1 = time.perf_counter()
            if "old_logprobs" in self.needs and rollout.old_logprobs is None:
                rollout = rollout.replace(old_logprobs=engine.logprobs(self.policy, rollout, self.plan))
            if "entropies" in self.needs and rollout.entropies is None:  # the sampling policy's (pi_old's)
                rollout = rollout.replace(entropies=engine.entropies(self.policy, rollout, self.plan))
        self._times = {"time/generate": t1 - t0, "time/old_logprobs": time.perf_counter() - t1}
        return rollout

    def metrics(self) -> dict[str, float]:
        """See :class:`RolloutProducer`."""
        return {**self._times, **self.source.metrics()}

    def state_dict(self) -> dict:
        """The source's position."""
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.source.load_state_dict(state)
