"""``chain``: a gradient coefficient composed of one advantage estimator, objective terms and an
aggregation (optax-style). The GC of a composition is the sum of its terms' GCs, and its
objective the sum of their objectives, so dJ/dlogp = weights * GC holds for every composition
whose pieces satisfy it.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..rollout import Rollout
from .terms import masked, token_mean_of


class Term(Protocol):
    """An objective term: J(logp) and its closed-form gradient coefficient, dJ/dlogp = weights * GC."""

    couples_group: bool

    def check(self, rollout: Rollout) -> None:
        """Raise a ValueError naming any field the piece needs that is missing or inconsistent."""

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        """The term's objective J(logp) as a differentiable scalar (uses ``rollout.weights``)."""

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        """The closed-form gradient coefficient, 0 outside output tokens."""

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        """Scalar metrics for logging (see docs/metrics.md)."""


class AdvantageEstimator(Protocol):
    """A prepare-time piece: fills ``advantages`` (and possibly ``returns``), without grad."""

    def check(self, rollout: Rollout) -> None:
        """Raise a ValueError naming any field the estimator needs that is missing or inconsistent."""

    def __call__(self, rollout: Rollout) -> Rollout:
        """The rollout with ``advantages`` filled."""

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        """The advantages alone, 0 outside output tokens."""


class Stateful(Protocol):
    """Anything whose state a checkpoint saves: sources, coefficients with models, reward models."""

    def state_dict(self) -> dict:
        """Tensors and plain values that restore this object exactly (no pickle needed)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""


Aggregation = Callable[[Rollout], Float[Tensor, "batch seq"]]


@dataclass(frozen=True)
class Chain:
    """A GradientCoefficient: ``advantage`` (may be None) -> ``terms`` -> ``aggregation``."""

    advantage: Optional[AdvantageEstimator]
    terms: tuple[Term, ...]
    aggregation: Aggregation
    name: str = "chain"

    @property
    def needs(self) -> frozenset:
        """Rollout fields the pieces read (the loop fills only these: no reference pass at beta = 0)."""
        out = set().union(*(getattr(p, "needs", frozenset()) for p in self.terms))
        if self.advantage is not None:
            out = (out - {"advantages", "returns"}) | set(getattr(self.advantage, "needs", frozenset()))
        return frozenset(out)

    @property
    def couples_group(self) -> bool:
        return any(t.couples_group for t in self.terms)

    @torch.no_grad()
    def prepare(self, rollout: Rollout) -> Rollout:
        """Advantages and aggregation weights from the whole batch. Checks every piece's inputs
        first, so a bad batch raises before anything is computed."""
        probe = rollout
        if self.advantage is not None:
            self.advantage.check(rollout)
            probe = rollout.replace(advantages=torch.zeros(rollout.input_ids.shape, dtype=torch.float64, device=rollout.input_ids.device))
        for term in self.terms:
            term.check(probe)
        rollout = rollout.replace(weights=self.aggregation(rollout))
        return self.advantage(rollout) if self.advantage is not None else rollout

    @torch.no_grad()
    def __call__(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        gc = sum(term.gc(rollout, logprobs) for term in self.terms)
        return masked(rollout, gc)

    def objective(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        """J(logp): the quantity whose gradient the engine follows (for tests and teaching)."""
        return sum(term.objective(rollout, logprobs) for term in self.terms)

    @torch.no_grad()
    def metrics(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"], gc: Optional[Tensor] = None) -> dict[str, float]:
        """gc/mean, gc/abs_mean and every term's metrics, for one batch."""
        gc = self(rollout, logprobs) if gc is None else gc
        out = {"gc/mean": token_mean_of(rollout, gc), "gc/abs_mean": token_mean_of(rollout, gc.abs())}
        for term in self.terms:
            out.update(term.metrics(rollout, logprobs))
        return out

    def attach(self, policy: nn.Module) -> None:
        """Give pieces that own models (PPO's value model) the policy to initialise from."""
        for piece in (self.advantage, *self.terms):
            if hasattr(piece, "attach"):
                piece.attach(policy)

    def _stateful(self) -> list[tuple[int, Any]]:
        return [(i, p) for i, p in enumerate((self.advantage, *self.terms)) if hasattr(p, "state_dict")]

    def state_dict(self) -> dict:
        """State of pieces that own models (PPO's value model and its optimizer), by position."""
        return {i: p.state_dict() for i, p in self._stateful()}

    def load_state_dict(self, state: dict) -> None:
        for i, p in self._stateful():
            p.load_state_dict(state[i])

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Train any auxiliary model the pieces own (PPO's value model) on a prepared batch."""
        out: dict[str, float] = {}
        for piece in (self.advantage, *self.terms):
            if hasattr(piece, "update"):
                out.update(piece.update(rollout))
        return out


def chain(advantage: Optional[AdvantageEstimator], *terms: Term, aggregation: Aggregation, name: str = "chain") -> Chain:
    """Compose a gradient coefficient, e.g.
    ``chain(group_normalized(), ppo_clip(0.2), kl_k3(0.04), aggregation=sequence_mean())``."""
    if not terms:
        raise ValueError("chain: needs at least one objective term")
    return Chain(advantage, tuple(terms), aggregation, name)
