"""REINFORCE++'s advantage (Hu 2025; OpenRLHF ``advantage_estimator="reinforce"``): no critic,
no group baseline. The KL is in the reward at every token,
    r_t = r(q, o) 1[t = |o|] - kl_beta * D_t,   D_t = k1 = log pi_old(o_t) - log pi_ref(o_t) (or k2, k3),
the return is G_t = sum_{l >= 0} gamma^l r_{t+l}, and the advantage is G whitened over every
output token of the (global) batch: A = (G - mean) / std (population std, as OpenRLHF's
``masked_normalize``; a batch whose returns are all equal gets exactly 0).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..distributed import global_mean_std
from ..rollout import Rollout
from ..critic import scored_tokens as _scored_tokens
from .gae import _last_token, gae_advantages
from .pieces import AdvantageEstimator
from .terms import KL_ESTIMATORS, kl_estimate, masked


@dataclass(frozen=True)
class DiscountedReturns(AdvantageEstimator):
    """A_t = whiten(G_t) over the batch, G_t the discounted return of per-token rewards with the KL inside."""

    gamma: float = 1.0
    kl_beta: float = 0.0
    kl_estimator: str = "k1"
    whiten: bool = True

    @property
    def needs(self) -> frozenset:
        return frozenset({"rewards"} | ({"old_logprobs", "ref_logprobs"} if self.kl_beta else set()))

    @property
    def label(self) -> str:
        return f"discounted_returns(gamma={self.gamma}, kl_beta={self.kl_beta})"

    @property
    def formula(self) -> str:
        kl = rf" - {self.kl_beta:g}\,{self.kl_estimator}_t" if self.kl_beta else ""
        g = rf"{self.gamma:g}^l" if self.gamma != 1 else ""
        ret = rf"\sum_{{l \ge 0}} {g} r_{{t+l}},\ r_t = r\,\mathbb{{1}}[t = \lvert o\rvert]{kl}"
        return (r"\mathrm{whiten}_{batch}\Big(" + ret + r"\Big)") if self.whiten else ret

    def token_rewards(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        """r_t: the outcome reward at the last output token minus kl_beta * D_t at every token (fp64)."""
        last = _last_token(rollout.completion_mask) & rollout.completion_mask
        out = torch.where(last, rollout.rewards.to(torch.float64)[:, None], torch.zeros((), dtype=torch.float64))
        if self.kl_beta:
            d = kl_estimate(rollout.old_logprobs.to(torch.float64), rollout.ref_logprobs.to(torch.float64), self.kl_estimator)
            out = out - self.kl_beta * masked(rollout, d)
        return out

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        m = _scored_tokens(rollout)  # unscored samples: 0, and left out of the whitening
        zeros = torch.zeros(m.shape, dtype=torch.float64, device=m.device)
        g = gae_advantages(self.token_rewards(rollout), zeros, m, self.gamma, 1.0)  # V = 0, lambda = 1: the return
        if self.whiten:  # over every rank's scored tokens (a collective: every rank calls it)
            mean, std, n = global_mean_std(g[m], unbiased=False)
            if n:
                g = (g - mean) / std if std > 0 else torch.zeros_like(g)
        return torch.where(m, g, zeros).to(rollout.rewards.dtype)


def discounted_returns(gamma: float = 1.0, kl_beta: float = 0.0, kl_estimator: str = "k1", whiten: bool = True) -> DiscountedReturns:
    """REINFORCE++'s advantage: discounted returns of per-token rewards (KL inside), whitened over the batch."""
    if not 0 <= gamma <= 1 or not kl_beta >= 0 or kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"discounted_returns: need 0 <= gamma <= 1, kl_beta >= 0, kl_estimator in {KL_ESTIMATORS}; "
                         f"got {gamma}, {kl_beta}, {kl_estimator!r}")
    return DiscountedReturns(gamma, kl_beta, kl_estimator, whiten)
