"""Per-token objective terms. Each knows its objective J(logp) = sum_{b,t} w[b,t] * j(logp[b,t])
and its closed-form gradient coefficient GC = dj/dlogp, so that dJ/dlogp = w * GC exactly.

Inputs are read through the completion mask: whatever sits in masked slots (NaN, inf) is never
used, so it changes nothing.
"""

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from .pieces import Term


def masked(rollout: Rollout, x: Tensor) -> Tensor:
    """x where the token is an output token, else 0 (NaN/inf in unused slots never propagate)."""
    return torch.where(rollout.completion_mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def token_mean_of(rollout: Rollout, x: Tensor) -> float:
    """Mean of ``x`` over the output tokens of the batch (a float, for metrics)."""
    n = rollout.num_completion_tokens
    return float(masked(rollout, x).sum() / n) if n else 0.0


def weighted(rollout: Rollout, j: Tensor) -> Tensor:
    """sum_{b,t} w[b,t] j[b,t] over output tokens: a per-token term's objective."""
    return (rollout.weights.to(j.dtype) * masked(rollout, j)).sum()


@dataclass(frozen=True)
class PolicyGradient(Term):
    """j = A_t * log pi  ->  GC = A_t. (SFT with A = 1, RFT with A = 1[correct].)"""

    couples_group = False
    needs = frozenset({"advantages"})
    label = "policy_gradient()"
    formula = "A"

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        return weighted(rollout, rollout.advantages.to(logp.dtype) * logp)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return masked(rollout, rollout.advantages.to(logp.dtype))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        return {"advantage/mean": token_mean_of(rollout, rollout.advantages)}


Estimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = get_args(Estimator)


def kl_estimate(logp: Tensor, ref: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL[pi || pi_ref] from samples of pi, with log kappa = log pi_ref - log pi:
    k1 = -log kappa (unbiased, can be negative), k2 = (log kappa)^2 / 2, k3 = kappa - log kappa - 1
    (unbiased, >= 0; Schulman 2020)."""
    log_kappa = ref - logp
    if estimator == "k1":
        return -log_kappa
    if estimator == "k2":
        return 0.5 * log_kappa**2
    if estimator == "k3":
        return torch.exp(log_kappa) - log_kappa - 1
    raise ValueError(f"KL estimator must be one of {', '.join(KL_ESTIMATORS)}, got {estimator!r}")


@dataclass(frozen=True)
class KL(Term):
    """A KL estimator added to the loss: j = -beta D(logp), D = k1, k2 or k3 (see :func:`kl_estimate`).
    GC = -beta dD/dlogp:  k1 -> -beta,  k2 -> beta log kappa,  k3 -> beta (kappa - 1) (GRPO, Eq. 3)."""

    beta: float = 0.04
    estimator: Estimator = "k3"
    couples_group = False

    @property
    def needs(self) -> frozenset:
        return frozenset({"ref_logprobs"}) if self.beta else frozenset()

    @property
    def label(self) -> str:
        return f"kl_k3(beta={self.beta})" if self.estimator == "k3" else f"kl(beta={self.beta}, estimator={self.estimator!r})"

    @property
    def formula(self) -> str:
        b = f"{self.beta:g}"
        if not self.beta:
            return "0"
        return {"k1": f"-{b}", "k2": rf"{b}\log\kappa", "k3": rf"{b}(\kappa - 1)"}[self.estimator]

    def _log_kappa(self, rollout: Rollout, logp: Tensor) -> Tensor:
        if rollout.ref_logprobs is None:
            return torch.zeros_like(logp)
        return masked(rollout, rollout.ref_logprobs.to(logp.dtype)) - masked(rollout, logp)

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        log_kappa = self._log_kappa(rollout, logp)
        return weighted(rollout, -self.beta * kl_estimate(-log_kappa, torch.zeros_like(log_kappa), self.estimator))

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        log_kappa = self._log_kappa(rollout, logp)
        slope = {"k1": torch.full_like(log_kappa, -1.0), "k2": log_kappa, "k3": torch.exp(log_kappa) - 1}[self.estimator]
        return masked(rollout, self.beta * slope)

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        log_kappa = self._log_kappa(rollout, logp)
        return {"kl/k3": token_mean_of(rollout, torch.exp(log_kappa) - log_kappa - 1), "kl/k1": token_mean_of(rollout, -log_kappa)}


def policy_gradient() -> PolicyGradient:
    """The plain policy-gradient term, GC = A."""
    return PolicyGradient()


def kl(beta: float = 0.04, estimator: str = "k3") -> KL:
    """A KL estimator (k1, k2 or k3) of KL[pi || pi_ref] added to the loss with coefficient ``beta``."""
    if not beta >= 0:
        raise ValueError(f"kl: beta must be >= 0, got {beta}")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl: estimator must be one of {', '.join(KL_ESTIMATORS)}, got {estimator!r}")
    return KL(beta, estimator)


def kl_k3(beta: float = 0.04) -> KL:
    """The k3 KL term added to the loss (GRPO), GC = beta (kappa - 1)."""
    if not beta >= 0:
        raise ValueError(f"kl_k3: beta must be >= 0, got {beta}")
    return KL(beta, "k3")
