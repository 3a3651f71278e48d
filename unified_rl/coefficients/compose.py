"""``chain``: a gradient coefficient composed of one advantage estimator, objective terms and an
aggregation (optax-style). The GC of a composition is the sum of its terms' GCs, and its
objective the sum of their objectives, so dJ/dlogp = weights * GC holds for every composition
whose pieces satisfy it.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from ..protocols import GradientCoefficient, check_needs, conforms
from ..rollout import Rollout
from .aggregation import Aggregation
from .pieces import AdvantageEstimator, Piece, Term, require
from .terms import masked, token_mean_of


@dataclass(frozen=True)
class Chain(GradientCoefficient):
    """A GradientCoefficient: ``advantage`` (may be None) -> ``terms`` -> ``aggregation``; terms over
    the vocabulary (``vocabulary``) share the aggregation's weights."""

    advantage: Optional[AdvantageEstimator]
    terms: tuple[Term, ...]
    aggregation: Aggregation
    name: str = "chain"
    vocabulary: tuple = ()

    def __post_init__(self) -> None:
        for piece in self.pieces + self.vocabulary:
            check_needs(piece.needs, f"chain {self.name!r}: piece {piece.label}")
        conforms(self.aggregation, Aggregation, f"chain {self.name!r}: aggregation")
        check_needs(self.aggregation.needs, f"chain {self.name!r}: aggregation {type(self.aggregation).__name__}")

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """The advantage estimator (if any) and the terms, in order."""
        return ((self.advantage,) if self.advantage is not None else ()) + self.terms

    @property
    def needs(self) -> frozenset:
        """Rollout fields the pieces read (the loop fills only these: no reference pass at beta = 0)."""
        out = set().union(*(t.needs for t in self.terms + self.vocabulary))
        if self.advantage is not None:
            out = (out - self.advantage.provides) | self.advantage.needs
        return frozenset(out | self.aggregation.needs)

    def with_correction(self, correction: Any) -> "Chain":
        """This chain with each policy term weighted by the sampler-mismatch ``correction``
        (``corrected``); the KL penalty and terms already corrected are left as they are (as TRL)."""
        from .correction import Corrected, corrected
        from .terms import KL

        terms = tuple(t if isinstance(t, (KL, Corrected)) else corrected(t, correction) for t in self.terms)
        return dataclasses.replace(self, terms=terms)

    @property
    def couples_group(self) -> bool:
        return any(t.couples_group for t in self.terms)

    @property
    def sampled(self) -> bool:
        """True when a term has a GC on the sampled tokens (a chain of vocabulary terms only has none)."""
        return bool(self.terms)

    @torch.no_grad()
    def prepare(self, rollout: Rollout) -> Rollout:
        """Advantages and aggregation weights from the whole batch. Checks every piece's inputs
        first, so a bad batch raises before anything is computed."""
        provided: frozenset = frozenset()
        if self.advantage is not None:
            require(rollout, self.advantage)
            self.advantage.check(rollout)
            provided = self.advantage.provides
        for term in self.terms:
            require(rollout, term, provided)
            term.check(rollout)
        for f in sorted(self.aggregation.needs):
            if getattr(rollout, f) is None:
                raise ValueError(f"chain {self.name!r}: aggregation {type(self.aggregation).__name__} needs Rollout.{f}, which is None")
        rollout = rollout.replace(weights=self.aggregation(rollout))
        if self.advantage is not None:
            rollout = self.advantage(rollout)
        for term in self.terms:
            rollout = term.prepare(rollout)
        return rollout

    @torch.no_grad()
    def __call__(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        gc = sum((term.gc(rollout, logprobs) for term in self.terms), torch.zeros_like(logprobs))
        return masked(rollout, gc)

    def objective(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        """J(logp) of the sampled-token terms: the quantity whose gradient the engine follows (for
        tests and teaching; the vocabulary terms' objectives read whole distributions)."""
        return sum(term.objective(rollout, logprobs) for term in self.terms)

    @torch.no_grad()
    def metrics(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"], gc: Optional[Tensor] = None) -> dict[str, float]:
        """gc/mean, gc/abs_mean and every term's metrics, for one batch."""
        gc = self(rollout, logprobs) if gc is None else gc
        out = {"gc/mean": token_mean_of(rollout, gc), "gc/abs_mean": token_mean_of(rollout, gc.abs())}
        for term in self.terms:
            out.update(term.metrics(rollout, logprobs))
        return out

    def state_dict(self) -> dict:
        """The pieces' own state, by position, the vocabulary terms after the others (e.g. an adaptive
        entropy coefficient; none for most pieces)."""
        return {i: state for i, p in enumerate(self.pieces + self.vocabulary) if (state := p.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""
        for i, p in enumerate(self.pieces + self.vocabulary):
            if i in state:
                p.load_state_dict(state[i])


def chain(advantage: Optional[AdvantageEstimator], *terms: Term, aggregation: Aggregation, name: str = "chain",
          vocabulary: tuple = ()) -> Chain:
    """Compose a gradient coefficient, e.g.
    ``chain(group_normalized(), ppo_clip(0.2), kl_k3(0.04), aggregation=sequence_mean())``, or with
    terms over the vocabulary: ``chain(None, aggregation=token_mean(), vocabulary=(jsd(0.5),))``."""
    if not terms and not vocabulary:
        raise ValueError("chain: needs at least one objective term (on the sampled tokens or over the vocabulary)")
    return Chain(advantage, tuple(terms), aggregation, name, tuple(vocabulary))
