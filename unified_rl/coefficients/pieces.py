"""The pieces a gradient coefficient is composed of, as Protocols with no-op hook defaults.

A piece declares the Rollout fields it reads (``needs``); the chain checks them, so a piece's
own ``check`` only looks at values (group sizes, masks), never at which fields are filled.
"""

from typing import Protocol

from jaxtyping import Float
from torch import Tensor

from ..protocols import Stateful
from ..rollout import Rollout, RolloutField


class Piece(Stateful, Protocol):
    """What every piece has: the Rollout fields it reads (``needs``, checked by the chain before
    anything is computed), a ``check`` of values, and the optional checkpoint hooks of
    :class:`Stateful` (no-op defaults, inherited by subclassing)."""

    needs: frozenset[RolloutField] = frozenset()

    @property
    def label(self) -> str:
        """How errors name the piece, e.g. ``kl_k3(beta=0.04)``."""
        return type(self).__name__

    def check(self, rollout: Rollout) -> None:
        """Raise a ValueError for inputs that are present but inconsistent (``needs`` is checked already)."""

    @property
    def formula(self) -> str:
        """What the piece contributes, in LaTeX: A for an estimator, GC for a term (docs/paradigm.md's table)."""
        return f"\\text{{{self.label}}}"


class Term(Piece, Protocol):
    """An objective term: J(logp) and its closed-form gradient coefficient, dJ/dlogp = weights * GC."""

    couples_group: bool = False

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        """The term's objective J(logp) as a differentiable scalar (uses ``rollout.weights``)."""
        ...

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        """The closed-form gradient coefficient, 0 outside output tokens."""
        ...

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        """Scalar metrics for logging (see docs/metrics.md)."""
        return {}

    def prepare(self, rollout: Rollout) -> Rollout:
        """Fill what the term decides on the whole batch, before any micro-batch (called by the
        chain's ``prepare`` after advantages and weights). Default: nothing."""
        return rollout

    def gc_scaled(self, rollout: Rollout, logp: Float[Tensor, "batch seq"], factor: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        """The GC of the objective sum_{b,t} w factor j: a term gated by a 0/1 mask or weighted by an
        importance weight (the factor is a constant of the batch). Default, right for a term whose j
        at t reads only logp at t: factor * GC (0 where the factor is 0, whatever the GC). Terms whose
        j reads other tokens (sequence-level ratios) override it."""
        import torch

        scaled = rollout.replace(weights=rollout.weights * factor.to(rollout.weights.dtype))
        return torch.where(factor != 0, factor.to(logp.dtype) * self.gc(scaled, logp), torch.zeros((), dtype=logp.dtype))


class AdvantageEstimator(Piece, Protocol):
    """A prepare-time piece: fills ``advantages`` (and whatever else it ``provides``), without grad."""

    provides: frozenset = frozenset({"advantages"})

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        """The advantages, 0 outside output tokens."""
        ...

    def __call__(self, rollout: Rollout) -> Rollout:
        """The rollout with ``advantages`` filled."""
        return rollout.replace(advantages=self.advantages(rollout))


def require(rollout: Rollout, piece: Piece, provided: frozenset = frozenset()) -> None:
    """Raise a ValueError naming ``piece`` and the first field of its ``needs`` that is None
    (fields in ``provided`` will be filled by an earlier piece)."""
    for f in sorted(piece.needs - provided):
        if getattr(rollout, f) is None:
            raise ValueError(f"{piece.label} needs Rollout.{f}, which is None")
