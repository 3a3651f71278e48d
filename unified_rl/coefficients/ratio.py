"""Importance-ratio terms: PPO's clip (with clip-higher, TRL's ``delta`` and verl's dual clip),
SAPO's soft gate and CISPO's stop-gradient weight, each at the token or the sequence level.

The ratio of a token is r_t = pi(o_t) / pi_old(o_t) (``level="token"``). GSPO's sequence level
uses one ratio per sequence, s_i = exp(mean_t log r_t) (``level="sequence"``, TRL's
``importance_sampling_level="sequence"``); TRL's RLOO uses exp(sum_t log r_t) (``"sequence_sum"``).
A sequence-level value is broadcast to every token of its sequence and then aggregated with the
chain's weights, as TRL does, so J = sum_i W_i f(s_i, A_i) with W_i = sum_t w_{i,t}; its
gradient reaches token t through ds_i/dlogp_t = s_i c_i (c_i = 1/|o_i| or 1), and the GC at t is
W_i f'(s_i) s_i c_i / w_{i,t} (= f'(s_i) s_i when the weights are equal within a sequence).
"""

from dataclasses import dataclass
from typing import Literal, Optional, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from .pieces import Term
from .terms import masked, token_mean_of, weighted

Level = Literal["token", "sequence", "sequence_sum"]
LEVELS: tuple[str, ...] = get_args(Level)


def log_ratio(rollout: Rollout, logp: Tensor, level: str) -> Tensor:
    """log r at every output token (0 elsewhere): per token, or its sequence's mean or sum."""
    lr = masked(rollout, logp) - masked(rollout, rollout.old_logprobs.to(logp.dtype))
    if level == "token":
        return lr
    per_seq = lr.sum(-1)
    if level == "sequence":
        per_seq = per_seq / rollout.completion_lengths.to(logp.dtype).clamp(min=1)
    return masked(rollout, per_seq[:, None].expand_as(lr))


class RatioTerm(Term):
    """j = f(r, A) for a surrogate f of the ratio; GC follows from df/dr by the chain rule above."""

    level: Level = "token"
    couples_group = False
    needs = frozenset({"advantages", "old_logprobs"})

    def value(self, r: Tensor, adv: Tensor) -> Tensor:
        """f(r, A), elementwise."""
        ...

    def slope(self, r: Tensor, adv: Tensor) -> Tensor:
        """df/dr (r, A), elementwise."""
        ...

    @property
    def rho(self) -> str:
        """The ratio's symbol: per token, or the sequence's geometric mean / product."""
        return {"token": r"\rho_t", "sequence": r"s_i", "sequence_sum": r"S_i"}[self.level]

    def _parts(self, rollout: Rollout, logp: Tensor) -> tuple[Tensor, Tensor]:
        return torch.exp(log_ratio(rollout, logp, self.level)), masked(rollout, rollout.advantages.to(logp.dtype))

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        r, adv = self._parts(rollout, logp)
        return weighted(rollout, self.value(r, adv))

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return self.gc_scaled(rollout, logp, rollout.completion_mask.to(logp.dtype))

    def gc_scaled(self, rollout: Rollout, logp: Float[Tensor, "batch seq"], factor: Tensor) -> Float[Tensor, "batch seq"]:
        """GC of sum_{b,t} w factor f(r, A): at the sequence level a dropped token still moves s_i."""
        r, adv = self._parts(rollout, logp)
        slope = self.slope(r, adv)
        per_token = masked(rollout, torch.where(slope == 0, torch.zeros_like(slope), slope * r))  # a clipped inf ratio gives 0, not NaN
        factor = factor.to(logp.dtype)
        if self.level == "token":
            return torch.where(factor != 0, factor * per_token, torch.zeros_like(per_token))
        w = masked(rollout, rollout.weights.to(logp.dtype))
        total = (w * factor * per_token).sum(-1, keepdim=True)  # sum_t w_t factor_t f'(s_i) s_i
        if self.level == "sequence":
            total = total / rollout.completion_lengths.to(logp.dtype).clamp(min=1)[:, None]
        return torch.where(w > 0, total / torch.where(w > 0, w, torch.ones_like(w)), torch.zeros_like(w))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        r, adv = self._parts(rollout, logp)
        return {"ratio/mean": token_mean_of(rollout, r), "advantage/mean": token_mean_of(rollout, adv)}


@dataclass(frozen=True)
class PPOClip(RatioTerm):
    """Clipped surrogate (PPO, GRPO): j = min(r' A, clip(r, 1 - eps_low, 1 + eps_high) A), where
    r' = min(r, delta) with TRL's ``delta`` and, with verl's dual clip c (A < 0 only), j = max(j, c A).
    GC = A r on tokens where the unclipped branch is the active one, else 0: inactive where
    (A > 0, r > 1 + eps_high), (A < 0, r < 1 - eps_low), r > delta, or (A < 0, r > c).
    For A < 0, ``delta`` and ``dual_clip`` mask the same tokens (r above the bound)."""

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    level: Level = "token"
    delta: Optional[float] = None
    dual_clip: Optional[float] = None

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("level", self.level), ("delta", self.delta), ("dual_clip", self.dual_clip))
                        if v is not None and v != "token")
        return f"ppo_clip(epsilon={self.epsilon_low}, epsilon_high={self.epsilon_high}{extra})"

    @property
    def formula(self) -> str:
        bounds = [rf"[{1 - self.epsilon_low:g}, {1 + self.epsilon_high:g}]"]
        bounds += [rf"\delta={self.delta:g}"] if self.delta is not None else []
        bounds += [rf"c={self.dual_clip:g}"] if self.dual_clip is not None else []
        return rf"A\,{self.rho}\,\mathbb{{1}}_{{clip}}\ ({', '.join(bounds)})"

    def inactive(self, r: Tensor, adv: Tensor) -> Tensor:
        """Where the clipped (constant) branch is the active one: GC = 0 there."""
        out = ((adv > 0) & (r > 1 + self.epsilon_high)) | ((adv < 0) & (r < 1 - self.epsilon_low))
        if self.delta is not None:
            out = out | (r > self.delta)
        if self.dual_clip is not None:
            out = out | ((adv < 0) & (r > self.dual_clip))
        return out

    def value(self, r: Tensor, adv: Tensor) -> Tensor:
        unclipped = r.clamp(max=self.delta) if self.delta is not None else r
        j = torch.minimum(unclipped * adv, r.clamp(1 - self.epsilon_low, 1 + self.epsilon_high) * adv)
        if self.dual_clip is not None:
            j = torch.where(adv < 0, torch.maximum(j, self.dual_clip * adv), j)
        return j

    def slope(self, r: Tensor, adv: Tensor) -> Tensor:
        return torch.where(self.inactive(r, adv), torch.zeros_like(adv), adv)

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        r, adv = self._parts(rollout, logp)
        clipped = rollout.completion_mask & self.inactive(r, adv)
        return {**super().metrics(rollout, logp), "gc/frac_clipped": token_mean_of(rollout, clipped.to(r.dtype))}


@dataclass(frozen=True)
class SAPO(RatioTerm):
    """SAPO's soft gate in place of the clip: j = 4 sigmoid(tau (r - 1)) / tau * A, tau = tau_pos
    where A > 0 else tau_neg; GC = 4 sigma (1 - sigma) r A (= A at r = 1), smoothly -> 0 away from r = 1."""

    tau_pos: float = 1.0
    tau_neg: float = 1.05
    level: Level = "token"

    @property
    def label(self) -> str:
        return f"sapo(tau_pos={self.tau_pos}, tau_neg={self.tau_neg})"

    @property
    def formula(self) -> str:
        return rf"4\sigma(1-\sigma)\,{self.rho}\,A,\ \sigma = \sigma(\tau({self.rho} - 1)),\ \tau = {self.tau_pos:g} / {self.tau_neg:g}"

    def _tau(self, adv: Tensor) -> Tensor:
        return torch.where(adv > 0, torch.full_like(adv, self.tau_pos), torch.full_like(adv, self.tau_neg))

    def value(self, r: Tensor, adv: Tensor) -> Tensor:
        tau = self._tau(adv)
        return torch.sigmoid(tau * (r - 1)) * 4 / tau * adv

    def slope(self, r: Tensor, adv: Tensor) -> Tensor:
        s = torch.sigmoid(self._tau(adv) * (r - 1))
        return 4 * s * (1 - s) * adv


@dataclass(frozen=True)
class CISPO(Term):
    """CISPO: j = stopgrad(w) A log pi, w = min(r, eps_high) (TRL, the MiniMax-M1 form) or, with
    ``epsilon_low`` set, clamp(r, 1 - eps_low, 1 + eps_high) (verl's two-sided form; note eps_high is
    then an offset from 1, not the bound itself). GC = w A: every token keeps a gradient (the
    weight is clipped, never the token), unlike PPO's clip which zeroes clipped tokens."""

    epsilon_high: float = 5.0
    epsilon_low: Optional[float] = None
    level: Level = "token"
    couples_group = False
    needs = frozenset({"advantages", "old_logprobs"})

    @property
    def label(self) -> str:
        return f"cispo(epsilon_high={self.epsilon_high}, epsilon_low={self.epsilon_low})"

    @property
    def formula(self) -> str:
        r = {"token": r"\rho_t", "sequence": "s_i", "sequence_sum": "S_i"}[self.level]
        w = rf"\min({r}, {self.epsilon_high:g})" if self.epsilon_low is None else \
            rf"\mathrm{{clip}}({r}, {1 - self.epsilon_low:g}, {1 + self.epsilon_high:g})"
        return rf"\mathrm{{sg}}({w})\,A"

    def _weight(self, rollout: Rollout, logp: Tensor) -> Tensor:
        r = torch.exp(log_ratio(rollout, logp.detach(), self.level))
        if self.epsilon_low is None:
            return r.clamp(max=self.epsilon_high)
        return r.clamp(1 - self.epsilon_low, 1 + self.epsilon_high)

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        return weighted(rollout, self._weight(rollout, logp) * rollout.advantages.to(logp.dtype) * logp)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return masked(rollout, self._weight(rollout, logp) * rollout.advantages.to(logp.dtype))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        r = torch.exp(log_ratio(rollout, logp, self.level))
        cut = (r != self._weight(rollout, logp)) & rollout.completion_mask
        return {"ratio/mean": token_mean_of(rollout, r), "gc/frac_clipped": token_mean_of(rollout, cut.to(r.dtype))}


def _check_level(level: str, who: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"{who}: level must be one of {', '.join(LEVELS)}, got {level!r}")


def ppo_clip(epsilon: float = 0.2, epsilon_high: Optional[float] = None, *, level: str = "token", delta: Optional[float] = None,
             dual_clip: Optional[float] = None) -> PPOClip:
    """The clipped surrogate. ``epsilon_high`` > ``epsilon``: clip-higher (DAPO); ``level="sequence"``:
    GSPO's sequence ratio; ``delta``: TRL's upper clamp of the unclipped ratio (> 1 + epsilon_high);
    ``dual_clip``: verl's ``clip_ratio_c`` (> 1) for negative advantages."""
    eh = epsilon if epsilon_high is None else epsilon_high
    if not (epsilon >= 0 and eh >= 0):
        raise ValueError(f"ppo_clip: epsilon must be >= 0, got {epsilon}, {epsilon_high}")
    _check_level(level, "ppo_clip")
    if delta is not None and not delta > 1 + eh:
        raise ValueError(f"ppo_clip: delta must be > 1 + epsilon_high = {1 + eh}, got {delta}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"ppo_clip: dual_clip must be > 1, got {dual_clip}")
    return PPOClip(epsilon, eh, level, delta, dual_clip)


def sapo(tau_pos: float = 1.0, tau_neg: float = 1.05, *, level: str = "token") -> SAPO:
    """SAPO's soft gate 4 sigmoid(tau (r - 1)) / tau in place of the clip."""
    if not (tau_pos > 0 and tau_neg > 0):
        raise ValueError(f"sapo: temperatures must be > 0, got tau_pos={tau_pos}, tau_neg={tau_neg}")
    _check_level(level, "sapo")
    return SAPO(tau_pos, tau_neg, level)


def cispo(epsilon_high: float = 5.0, epsilon_low: Optional[float] = None, *, level: str = "token") -> CISPO:
    """CISPO's stop-gradient clipped weight: min(r, epsilon_high) (TRL) or, with ``epsilon_low``,
    verl's clamp(r, 1 - epsilon_low, 1 + epsilon_high)."""
    if not epsilon_high > 0 or (epsilon_low is not None and not 0 <= epsilon_low <= 1):
        raise ValueError(f"cispo: need epsilon_high > 0 and 0 <= epsilon_low <= 1, got {epsilon_high}, {epsilon_low}")
    _check_level(level, "cispo")
    return CISPO(epsilon_high, epsilon_low, level)
