"""Corrections for samples drawn by an older policy (asynchronous rollouts), as pieces: each weighs
a term by a function of the behaviour ratio w = pi_old / pi_behaviour, where pi_behaviour
(``sampler_logprobs``) is the policy version that sampled and pi_old (``old_logprobs``) the
learner's policy when the batch arrives -- the *proximal* policy of decoupled PPO. Both are
recorded log-probs, so w is a constant of the batch and the GC of the corrected term is the term's
GC times w (``corrected``).

* :func:`decoupled_ppo` -- AReaL's decoupled PPO: PPO's clip against the proximal policy, each
  token weighted by w and dropped where w exceeds a cap (``areal/utils/functional.py``,
  ``ppo_actor_loss_fn``, ``behav_imp_weight_cap``).
* :func:`masked_importance` -- prime-rl's default loss (``prime_rl/trainer/rl/loss.py``,
  ``default_loss_fn``): the stop-gradient weight pi_theta / pi_behaviour on the advantage, a token
  dropped where its ratio leaves [1/8, 8] and a whole sequence where the geometric mean of its
  ratios leaves [0.1, 10]; here pi_theta / pi_behaviour = (pi_theta / pi_old) w, CISPO's weight
  with no clip times the masked w -- the same GC, whose masks read w (prime-rl's read pi_theta,
  equal at the first update of a batch, the one prime-rl takes).
* The truncated / masked weights of the sampler mismatch (``sampler_correction``: token or
  sequence level) apply as they are: a stale sampler is one more reason pi_behaviour != pi_old.
* TRL's ``AsyncGRPOTrainer`` (``trl/experimental/async_grpo/async_grpo_trainer.py``,
  ``compute_loss``) applies no weight: PPO's clip with pi_old = pi_behaviour, token mean over the
  batch, and drops samples older than ``max_staleness``; here that is any chain without a
  correction (the worker's behaviour log-probs are then pi_old).
"""

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from .correction import Corrected, corrected, sampler_correction
from .ratio import cispo, ppo_clip
from .terms import masked, token_mean_of


@dataclass(frozen=True)
class MaskedImportance:
    """prime-rl's masked importance weight: w where token_low <= w_t <= token_high and the
    sequence's geometric mean of w lies in [geo_low, geo_high], else 0."""

    token_low: float = 0.125
    token_high: float = 8.0
    geo_low: float = 0.1
    geo_high: float = 10.0
    needs = frozenset({"old_logprobs", "sampler_logprobs"})
    mode = "masked_importance"

    @property
    def label(self) -> str:
        return f"masked_importance([{self.token_low:g}, {self.token_high:g}], geo [{self.geo_low:g}, {self.geo_high:g}])"

    def weight(self, rollout: Rollout, dtype: torch.dtype) -> Float[Tensor, "batch seq"]:
        """w where both masks keep the token, 0 elsewhere."""
        log_w = masked(rollout, rollout.old_logprobs.to(dtype) - rollout.sampler_logprobs.to(dtype))
        w = torch.exp(log_w)
        geo = torch.exp(log_w.sum(-1) / rollout.completion_lengths.to(dtype).clamp(min=1))[:, None]
        keep = (w >= self.token_low) & (w <= self.token_high) & (geo >= self.geo_low) & (geo <= self.geo_high)
        return masked(rollout, torch.where(keep, w, torch.zeros_like(w)))

    def metrics(self, rollout: Rollout, dtype: torch.dtype) -> dict[str, float]:
        """The share of output tokens the masks drop."""
        dropped = rollout.completion_mask & (self.weight(rollout, dtype) == 0)
        return {"mismatch/frac_corrected": token_mean_of(rollout, dropped.to(dtype))}


def decoupled_ppo(epsilon: float = 0.2, cap: Optional[float] = None, epsilon_high: Optional[float] = None) -> Corrected:
    """AReaL's decoupled PPO term: J = sum_t w_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps_high) A_t) with
    r_t = pi_theta / pi_old (pi_old: the proximal policy) and w_t = pi_old / pi_behaviour, set to 0
    where it exceeds ``cap`` (no cap: w as it is)."""
    if cap is not None and not cap > 1:
        raise ValueError(f"decoupled_ppo: cap must be > 1 (AReaL's behav_imp_weight_cap), got {cap}")
    weight = sampler_correction("token_mask", c_max=cap) if cap is not None else sampler_correction("token_truncate", c_max=float("inf"))
    return corrected(ppo_clip(epsilon, epsilon_high), weight)


def masked_importance(token_low: float = 0.125, token_high: float = 8.0, geo_low: float = 0.1, geo_high: float = 10.0) -> Corrected:
    """prime-rl's default policy term: GC = (pi_theta / pi_behaviour) A on the tokens its masks keep
    (see :class:`MaskedImportance`; defaults are prime-rl's)."""
    if not (0 <= token_low <= token_high and 0 <= geo_low <= geo_high):
        raise ValueError(f"masked_importance: need 0 <= low <= high, got token [{token_low}, {token_high}], geo [{geo_low}, {geo_high}]")
    return corrected(cispo(float("inf")), MaskedImportance(token_low, token_high, geo_low, geo_high))
