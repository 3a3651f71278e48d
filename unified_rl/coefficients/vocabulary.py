"""Coefficients over the vocabulary: terms whose objective reads the policy's whole next-token
distribution at each output position, not only the sampled token's log-prob.

    J = sum_t w_t j(log pi(. | q, o_<t))   ->   grad J = sum_t w_t sum_v C_{t,v} grad log pi(v | q, o_<t)

with C_{t,v} = dj / d log pi(v) (the log-probs taken as free variables); the engine forms
d J / d logits = w (C - pi sum_v C) chunk by chunk, so no [batch, seq, vocab] tensor is kept
(``engine.backward``). The sampled-token paradigm is the case C = GC onehot(o_t).

A term may read other models' distributions at the same positions (``reads``: ``"teacher"``,
``"reference"``), handed to it as log-probs; every distribution is at the rollout's temperature.
``j`` is written to be maximised: distances enter with a minus sign.

* :func:`jsd` -- the generalized Jensen-Shannon divergence to a teacher (beta = 0 forward KL, beta = 1
  reverse KL), TRL's ``GKDTrainer.generalized_jsd_loss`` and ``DistillationTrainer``'s loss;
* :func:`entropy_bonus` -- coef * H(pi), the exact entropy, a token mean as TRL's ``entropy_coef``
  (whatever the chain's weights), with TRL's adaptive coefficient (Skywork-OR1) as an option;
* :func:`kl_full` -- beta * KL(pi || pi_ref) over the whole vocabulary, beside the sampled k1/k2/k3.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .aggregation import token_mean
from .pieces import Piece

READS = ("teacher", "reference")  # the distributions a vocabulary term may read


class VocabularyTerm(Piece, Protocol):
    """An objective term over the vocabulary: ``objective`` j per position (differentiable in the
    log-probs) and its closed-form ``coefficient`` C = dj / d log pi, without grad."""

    reads: frozenset[str] = frozenset()
    name: str = "vocab"  # its metrics are ``{name}/mean``: the mean of j over output tokens
    aggregation: Any = None  # weights of its own (an Aggregation); None: the chain's

    def observe(self, entropy: float) -> dict[str, float]:
        """After each update: the policy's exact mean entropy over the batch's output tokens; returns
        metrics. Default: nothing (a coefficient that adapts, e.g. the entropy bonus's, uses it)."""
        return {}

    def objective(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, " n"]:
        """j at each position from the policy's log-probs ``logp`` and the ``reads`` distributions."""
        ...

    def coefficient(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, "n vocab"]:
        """C = dj / d log pi (log pi as free variables)."""
        ...


def reads_of(terms: Sequence[VocabularyTerm]) -> frozenset:
    """The other models' distributions ``terms`` read (``"teacher"``, ``"reference"``)."""
    return frozenset().union(*(t.reads for t in terms))


def _kl(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p || q) per row from log-probs (0 log 0 = 0)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


@dataclass(frozen=True)
class JSD(VocabularyTerm):
    """j = -JSD_beta(pi_T || pi) = -[beta KL(pi_T || m) + (1 - beta) KL(pi || m)], m = beta pi_T + (1 - beta) pi;
    beta = 0 is the forward KL -KL(pi_T || pi) (C = pi_T), beta = 1 the reverse -KL(pi || pi_T)
    (C = -pi (log pi - log pi_T)); otherwise C = -(1 - beta) pi (log pi - log m). As TRL's
    ``generalized_jsd_loss``: the two ends are the KLs themselves, not the limits of the mixture form."""

    beta: float = 0.5
    reads = frozenset({"teacher"})
    name = "distill"

    @property
    def label(self) -> str:
        return f"jsd(beta={self.beta:g})"

    @property
    def formula(self) -> str:
        if self.beta == 0:
            return r"\pi_T(v)"
        if self.beta == 1:
            return r"-\pi(v) \log\frac{\pi(v)}{\pi_T(v)}"
        return rf"-{1 - self.beta:g}\,\pi(v) \log\frac{{\pi(v)}}{{m(v)}},\ m = {self.beta:g}\pi_T + {1 - self.beta:g}\pi"

    def _mixture(self, logp: Tensor, logt: Tensor) -> Tensor:
        return torch.logaddexp(logp + math.log1p(-self.beta), logt + math.log(self.beta))

    def objective(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, " n"]:
        logt = others["teacher"].to(logp.dtype)
        if self.beta == 0:
            return -_kl(logt, logp)
        if self.beta == 1:
            return -_kl(logp, logt)
        m = self._mixture(logp, logt)
        return -(self.beta * _kl(logt, m) + (1 - self.beta) * _kl(logp, m))

    def coefficient(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, "n vocab"]:
        logt = others["teacher"].to(logp.dtype)
        if self.beta == 0:
            return logt.exp()
        if self.beta == 1:
            return -logp.exp() * (logp - logt)
        return -(1 - self.beta) * logp.exp() * (logp - self._mixture(logp, logt))


@dataclass
class EntropyBonus(VocabularyTerm):
    """j = coef * H(pi) = -coef sum_v pi log pi  ->  C = -coef pi log pi (the +1 of d/dlog pi adds
    nothing: sum_v pi grad log pi = 0), weighted by a token mean over the batch (TRL's ``entropy_coef``:
    the same meaning whatever the chain's normaliser).

    With ``target`` (TRL's ``use_adaptive_entropy``, Skywork-OR1): the bonus applies only while the
    last measured mean entropy is at or below ``target``, and after each update the coefficient moves
    by ``delta`` towards raising the entropy (up when it is at or below the target, down otherwise),
    within [``coef_min``, ``coef_max``]. The coefficient and the last entropy are checkpointed."""

    coef: float = 0.01
    target: Optional[float] = None
    delta: float = 0.005
    coef_min: float = 0.0
    coef_max: float = 1.0
    name = "entropy_bonus"
    aggregation: Any = field(default_factory=token_mean)
    last_entropy: float = float("-inf")  # the first step: TRL's controller starts gated on (no entropy measured yet)

    @property
    def label(self) -> str:
        return f"entropy_bonus(coef={self.coef:g}{'' if self.target is None else f', target={self.target:g}'})"

    @property
    def formula(self) -> str:
        return rf"-{self.coef:g}\,\pi(v) \log\pi(v)"

    def _applied(self) -> float:
        return self.coef if self.target is None or self.last_entropy <= self.target else 0.0

    def objective(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, " n"]:
        return self._applied() * -(logp.exp() * logp).sum(-1)

    def coefficient(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, "n vocab"]:
        return -self._applied() * logp.exp() * logp

    def observe(self, entropy: float) -> dict[str, float]:
        if self.target is None:
            return {"entropy_bonus/coef": self.coef}
        self.last_entropy = entropy
        step = self.delta if entropy <= self.target else -self.delta
        self.coef = min(max(self.coef + step, self.coef_min), self.coef_max)
        return {"entropy_bonus/coef": self.coef}

    def state_dict(self) -> dict:
        return {"coef": self.coef, "last_entropy": self.last_entropy}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.coef, self.last_entropy = float(state["coef"]), float(state["last_entropy"])


@dataclass(frozen=True)
class FullKL(VocabularyTerm):
    """j = -beta KL(pi || pi_ref) summed over the vocabulary (exact, no sampling estimate)
    ->  C = -beta pi (log pi - log pi_ref)."""

    beta: float = 0.04
    reads = frozenset({"reference"})
    name = "kl_full"

    @property
    def label(self) -> str:
        return f"kl_full(beta={self.beta:g})"

    @property
    def formula(self) -> str:
        return rf"-{self.beta:g}\,\pi(v) \log\frac{{\pi(v)}}{{\pi_{{ref}}(v)}}"

    def objective(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, " n"]:
        return -self.beta * _kl(logp, others["reference"].to(logp.dtype))

    def coefficient(self, logp: Float[Tensor, "n vocab"], others: Mapping[str, Tensor]) -> Float[Tensor, "n vocab"]:
        return -self.beta * logp.exp() * (logp - others["reference"].to(logp.dtype))


def jsd(beta: float = 0.5) -> JSD:
    """Distillation to the run's teacher by the generalized JSD (beta in [0, 1]; 0 forward KL, 1 reverse KL)."""
    if not 0 <= beta <= 1:
        raise ValueError(f"jsd: beta must be in [0, 1], got {beta}")
    return JSD(float(beta))


def entropy_bonus(coef: float = 0.01, *, target: Optional[float] = None, delta: float = 0.005, coef_min: float = 0.0,
                  coef_max: float = 1.0) -> EntropyBonus:
    """coef * the exact mean entropy of the policy over the output tokens (coef > 0 raises it); with
    ``target``, TRL's adaptive coefficient (see :class:`EntropyBonus`; TRL's defaults)."""
    if not math.isfinite(coef):
        raise ValueError(f"entropy_bonus: coef must be a finite number, got {coef}")
    if target is not None and not (delta >= 0 and coef_min <= coef <= coef_max):
        raise ValueError(f"entropy_bonus: adaptive control needs delta >= 0 and coef_min <= coef <= coef_max, got "
                         f"delta={delta}, coef={coef} in [{coef_min}, {coef_max}]")
    return EntropyBonus(float(coef), target, float(delta), float(coef_min), float(coef_max))


def kl_full(beta: float = 0.04) -> FullKL:
    """beta * KL(pi || pi_ref) over the whole vocabulary at each output position, as a penalty."""
    if not beta >= 0:
        raise ValueError(f"kl_full: beta must be >= 0, got {beta}")
    return FullKL(float(beta))
