"""PPO's advantage: GAE against the critic's values, a pure function of the rollout.

Per-token reward with the KL **inside the reward** (DeepSeekMath §4.1.1, k1 estimator):
    r_t = r_phi(q, o) * 1[t = |o|] - beta * (log pi_old(o_t) - log pi_ref(o_t))
    delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = sum_l (gamma lambda)^l delta_{t+l}
    returns_t = A_t + V(s_t)   (the critic's regression target)
V(s_t) is ``Rollout.values``, read at the position before token t (the state o_t is emitted
from), so values are aligned with ``input_ids`` like every other per-token tensor. The learner
fills them from the run's critic (``unified_rl.critic``), which it owns and trains.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..critic import scored_tokens
from ..distributed import global_mean_std
from ..rollout import Rollout
from .pieces import AdvantageEstimator
from .terms import masked


def gae_advantages(
    token_rewards: Float[Tensor, "batch seq"],
    values: Float[Tensor, "batch seq"],
    mask: Bool[Tensor, "batch seq"],
    gamma: float,
    lam: float,
) -> Float[Tensor, "batch seq"]:
    """GAE over the masked positions of each row, in order (gaps are skipped, not zero-filled)."""
    adv = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        m = mask[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, a, next_adv)
    return adv


def _last_token(mask: Bool[Tensor, "batch seq"]) -> Bool[Tensor, "batch seq"]:
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, pos, torch.full_like(pos, -1)).amax(-1)
    return pos == last[:, None]


@dataclass(frozen=True)
class GAE(AdvantageEstimator):
    """Advantages and returns by GAE(gamma, lambda) from the critic's ``values``; ``whiten``
    normalises the advantages over every rank's scored tokens."""

    gamma: float = 1.0
    lam: float = 0.95
    kl_beta: float = 0.04
    whiten: bool = False
    provides = frozenset({"advantages", "returns"})

    @property
    def needs(self) -> frozenset:
        return frozenset({"rewards", "values", "old_logprobs", "ref_logprobs"} if self.kl_beta else {"rewards", "values"})

    @property
    def label(self) -> str:
        return f"gae(kl_beta={self.kl_beta})"

    @property
    def formula(self) -> str:
        return rf"\mathrm{{GAE}}_{{\gamma={self.gamma:g},\lambda={self.lam:g}}}(r_t - {self.kl_beta:g}\,k1_t;\ V_\psi)"

    def token_rewards(self, rollout: Rollout, dtype: torch.dtype) -> Float[Tensor, "batch seq"]:
        """r_t: the outcome reward at the last output token minus the k1 KL penalty at every token."""
        r = _last_token(rollout.completion_mask) & rollout.completion_mask
        out = torch.where(r, rollout.rewards.to(dtype)[:, None], torch.zeros((), dtype=dtype))
        if self.kl_beta:
            out = out - self.kl_beta * masked(rollout, (rollout.old_logprobs - rollout.ref_logprobs).to(dtype))
        return out

    @torch.no_grad()
    def __call__(self, rollout: Rollout) -> Rollout:
        """Advantages and returns; an unscored sample (``scored`` False) gets exactly 0 for both
        and is left out of whitening and of the value loss: its placeholder reward is never read."""
        m = scored_tokens(rollout)
        values = torch.where(m, rollout.values.to(torch.float64), torch.zeros((), dtype=torch.float64))
        adv = gae_advantages(self.token_rewards(rollout, values.dtype), values, m, self.gamma, self.lam)
        returns = torch.where(m, adv + values, torch.zeros((), dtype=values.dtype))
        if self.whiten:  # over every rank's scored tokens (a collective: every rank calls it)
            mean, std, n = global_mean_std(adv[m])
            if n:
                adv = torch.where(m, (adv - mean) / max(std, 1e-8), torch.zeros((), dtype=adv.dtype))
        return rollout.replace(advantages=adv, returns=returns)


def gae(*, gamma: float = 1.0, lam: float = 0.95, kl_beta: float = 0.04, whiten: bool = False) -> GAE:
    """GAE advantages from the critic's values (PPO; the method carries the critic's spec)."""
    for name, v in (("gamma", gamma), ("lam", lam)):
        if not 0 <= v <= 1:
            raise ValueError(f"gae: {name} must be in [0, 1], got {v}")
    if kl_beta < 0:
        raise ValueError(f"gae: kl_beta must be >= 0, got {kl_beta}")
    return GAE(gamma, lam, kl_beta, whiten)
