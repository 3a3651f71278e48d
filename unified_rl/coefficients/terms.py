"""Per-token objective terms. Each knows its objective J(logp) = sum_{b,t} w[b,t] * j(logp[b,t])
and its closed-form gradient coefficient GC = dj/dlogp, so that dJ/dlogp = w * GC exactly.

Inputs are read through the completion mask: whatever sits in masked slots (NaN, inf) is never
used, so it changes nothing.
"""

from dataclasses import dataclass

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

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        return weighted(rollout, rollout.advantages.to(logp.dtype) * logp)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return masked(rollout, rollout.advantages.to(logp.dtype))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        return {"advantage/mean": token_mean_of(rollout, rollout.advantages)}


@dataclass(frozen=True)
class PPOClip(Term):
    """Clipped surrogate (PPO, GRPO): rho = pi / pi_old,
    j = min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)  ->  GC = A * rho * 1_clip,
    where 1_clip = 0 iff (A > 0 and rho > 1 + eps_high) or (A < 0 and rho < 1 - eps_low).
    eps_high > eps_low is DAPO's clip-higher."""

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    couples_group = False
    needs = frozenset({"advantages", "old_logprobs"})
    label = "ppo_clip()"

    def _ratio(self, rollout: Rollout, logp: Tensor) -> Tensor:
        return torch.exp(masked(rollout, logp) - masked(rollout, rollout.old_logprobs.to(logp.dtype)))

    def _active(self, rollout: Rollout, rho: Tensor, adv: Tensor) -> Tensor:
        clipped = ((adv > 0) & (rho > 1 + self.epsilon_high)) | ((adv < 0) & (rho < 1 - self.epsilon_low))
        return rollout.completion_mask & ~clipped

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        rho = self._ratio(rollout, logp)
        adv = masked(rollout, rollout.advantages.to(logp.dtype))
        j = torch.minimum(rho * adv, rho.clamp(1 - self.epsilon_low, 1 + self.epsilon_high) * adv)
        return weighted(rollout, j)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        rho = self._ratio(rollout, logp)
        adv = masked(rollout, rollout.advantages.to(logp.dtype))
        return torch.where(self._active(rollout, rho, adv), adv * rho, torch.zeros((), dtype=rho.dtype))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        rho = self._ratio(rollout, logp)
        adv = masked(rollout, rollout.advantages.to(logp.dtype))
        clipped = rollout.completion_mask & ~self._active(rollout, rho, adv)
        return {
            "ratio/mean": token_mean_of(rollout, rho),
            "gc/frac_clipped": token_mean_of(rollout, clipped.to(rho.dtype)),
            "advantage/mean": token_mean_of(rollout, adv),
        }


@dataclass(frozen=True)
class KLk3(Term):
    """The unbiased k3 estimator of KL[pi || pi_ref], added to the loss (GRPO, Eq. 3):
    kappa = pi_ref / pi,  D = kappa - log kappa - 1 >= 0,  j = -beta D  ->  GC = beta (kappa - 1)."""

    beta: float = 0.04
    couples_group = False

    @property
    def needs(self) -> frozenset:
        return frozenset({"ref_logprobs"}) if self.beta else frozenset()

    @property
    def label(self) -> str:
        return f"kl_k3(beta={self.beta})"

    def _log_kappa(self, rollout: Rollout, logp: Tensor) -> Tensor:
        if rollout.ref_logprobs is None:
            return torch.zeros_like(logp)
        return masked(rollout, rollout.ref_logprobs.to(logp.dtype)) - masked(rollout, logp)

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        log_kappa = self._log_kappa(rollout, logp)
        return weighted(rollout, -self.beta * (torch.exp(log_kappa) - log_kappa - 1))

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return masked(rollout, self.beta * (torch.exp(self._log_kappa(rollout, logp)) - 1))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        log_kappa = self._log_kappa(rollout, logp)
        return {"kl/k3": token_mean_of(rollout, torch.exp(log_kappa) - log_kappa - 1), "kl/k1": token_mean_of(rollout, -log_kappa)}


def policy_gradient() -> PolicyGradient:
    """The plain policy-gradient term, GC = A."""
    return PolicyGradient()


def ppo_clip(epsilon: float = 0.2, epsilon_high: "float | None" = None) -> PPOClip:
    """Symmetric clip by default; ``epsilon_high`` > ``epsilon`` gives clip-higher."""
    if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
        raise ValueError(f"ppo_clip: epsilon must be >= 0, got {epsilon}, {epsilon_high}")
    return PPOClip(epsilon, epsilon if epsilon_high is None else epsilon_high)


def kl_k3(beta: float = 0.04) -> KLk3:
    """The k3 KL term added to the loss, GC = beta (kappa - 1)."""
    if not beta >= 0:
        raise ValueError(f"kl_k3: beta must be >= 0, got {beta}")
    return KLk3(beta)
