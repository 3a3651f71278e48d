"""PPO's advantage: GAE against a value model V_psi that the coefficient owns and trains.

Per-token reward with the KL **inside the reward** (DeepSeekMath §4.1.1, k1 estimator):
    r_t = r_phi(q, o) * 1[t = |o|] - beta * (log pi_old(o_t) - log pi_ref(o_t))
    delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = sum_l (gamma lambda)^l delta_{t+l}
    returns_t = A_t + V(s_t)   (the value model's regression target)
V(s_t) is read at the position before token t (the state o_t is emitted from), so values are
aligned with ``input_ids`` like every other per-token tensor. The value model is any module
``value_model(input_ids, attention_mask) -> values [batch, seq]`` so aligned (``hf.ValueModel``
builds one from a transformers policy).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from ..distributed import global_mean_std, global_sum, sum_gradients, world_size
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


def _scored_tokens(rollout: Rollout) -> Bool[Tensor, "batch seq"]:
    """Output tokens of the samples a reward function could score."""
    if rollout.scored is None:
        return rollout.completion_mask
    return rollout.completion_mask & rollout.scored[:, None]


def _last_token(mask: Bool[Tensor, "batch seq"]) -> Bool[Tensor, "batch seq"]:
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, pos, torch.full_like(pos, -1)).amax(-1)
    return pos == last[:, None]


_CRITIC_BUILDERS: list[Callable[[nn.Module], Optional[nn.Module]]] = []


def register_critic_builder(builder: Callable[[nn.Module], Optional[nn.Module]]) -> None:
    """Let ``builder(policy)`` build the value model of a ``gae()`` given none (it returns None for a
    policy it does not know). ``unified_rl.hf`` registers one for transformers policies."""
    if builder not in _CRITIC_BUILDERS:
        _CRITIC_BUILDERS.insert(0, builder)


def default_critic(policy: nn.Module) -> nn.Module:
    """The value model the first registered builder makes for ``policy``."""
    for builder in _CRITIC_BUILDERS:
        critic = builder(policy)
        if critic is not None:
            return critic
    raise ValueError(f"gae(): no value model for a {type(policy).__name__} policy: pass value_model= or value_model_factory= "
                     "(a transformers policy gets one once unified_rl.hf is imported)")


@dataclass
class GAE(AdvantageEstimator):
    """Advantages by GAE(gamma, lambda) with a value model; ``update`` trains the value model.
    Without ``value_model``, ``attach(policy)`` builds one with ``value_model_factory(policy)``, or
    else with the registered builder for the policy's kind (:func:`register_critic_builder`)."""

    value_model: Optional[nn.Module] = None
    gamma: float = 1.0
    lam: float = 0.95
    kl_beta: float = 0.04
    whiten: bool = False
    value_lr: float = 1e-4
    value_clip: Optional[float] = 0.2
    value_model_factory: Optional[Callable[[nn.Module], nn.Module]] = field(default=None, repr=False)
    optimizer: Any = field(default=None, repr=False)
    provides = frozenset({"advantages", "returns"})

    @property
    def needs(self) -> frozenset:
        return frozenset({"rewards", "old_logprobs", "ref_logprobs"} if self.kl_beta else {"rewards"})

    @property
    def label(self) -> str:
        return f"gae(kl_beta={self.kl_beta})"

    @property
    def formula(self) -> str:
        return rf"\mathrm{{GAE}}_{{\gamma={self.gamma:g},\lambda={self.lam:g}}}(r_t - {self.kl_beta:g}\,k1_t;\ V_\psi)"

    def attach(self, policy: nn.Module) -> None:
        if self.value_model is None:
            self.value_model = self.value_model_factory(policy) if self.value_model_factory else default_critic(policy)
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.value_model.parameters(), lr=self.value_lr)

    def check(self, rollout: Rollout) -> None:
        if self.value_model is None:
            raise ValueError("gae(): no value model; pass value_model= or call coefficient.attach(policy) first")

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
        values = self.value_model(rollout.input_ids, rollout.attention_mask).to(torch.float64)
        m = _scored_tokens(rollout)
        values = torch.where(m, values, torch.zeros((), dtype=values.dtype))
        adv = gae_advantages(self.token_rewards(rollout, values.dtype), values, m, self.gamma, self.lam)
        returns = torch.where(m, adv + values, torch.zeros((), dtype=values.dtype))
        if self.whiten:  # over every rank's scored tokens (a collective: every rank calls it)
            mean, std, n = global_mean_std(adv[m])
            if n:
                adv = torch.where(m, (adv - mean) / max(std, 1e-8), torch.zeros((), dtype=adv.dtype))
        return rollout.replace(advantages=adv, returns=returns)

    def owned_models(self) -> dict[str, tuple[nn.Module, Any]]:
        return {"value_model": (self.value_model, self.optimizer)} if self.value_model is not None else {}

    def state_dict(self) -> dict:
        """The value model and its optimizer; none under torchrun, where the Trainer checkpoints
        them (sharded) through DCP (:meth:`owned_models`)."""
        if world_size() > 1:
            return {}
        return {"value_model": self.value_model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.value_model.load_state_dict(state["value_model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def value_loss(self, rollout: Rollout) -> Float[Tensor, ""]:
        """0.5 * mean over output tokens of (V - returns)^2 (clipped around the sampling-time values)."""
        values = self.value_model(rollout.input_ids, rollout.attention_mask)
        target = rollout.returns.to(values.dtype)
        err = (values - target) ** 2
        if self.value_clip is not None:
            old = (rollout.returns - rollout.advantages).to(values.dtype) if not self.whiten else values.detach()
            clipped = old + (values - old).clamp(-self.value_clip, self.value_clip)
            err = torch.maximum(err, (clipped - target) ** 2)
        m = _scored_tokens(rollout)  # the mean over every rank's scored tokens (a collective)
        return 0.5 * torch.where(m, err, torch.zeros((), dtype=err.dtype)).sum() / max(int(global_sum(int(m.sum()))), 1)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One AdamW step of the value model on this batch."""
        if rollout.returns is None:
            raise ValueError("gae().update needs Rollout.returns, which is None; run coefficient.prepare first")
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.value_backward(rollout)
        self.optimizer.step()
        return {"value/loss": loss}

    def value_backward(self, rollout: Rollout) -> float:
        """The value loss's gradient in ``.grad``. Under torchrun each rank's loss has the union
        batch's normaliser and the ranks' gradients are summed: by FSDP2 when the Trainer sharded the
        value model, else here (a whole model on every rank, as under DDP), so every rank takes the
        one-process step. Returns the (global) loss."""
        loss = self.value_loss(rollout)
        loss.backward()
        sum_gradients(self.value_model.parameters())
        return float(global_sum(float(loss.detach())))


def gae(value_model: Optional[nn.Module] = None, *, gamma: float = 1.0, lam: float = 0.95, kl_beta: float = 0.04,
        whiten: bool = False, value_lr: float = 1e-4, value_clip: Optional[float] = 0.2,
        value_model_factory: Optional[Callable[[nn.Module], nn.Module]] = None) -> GAE:
    """GAE advantages with a value model that the coefficient trains (PPO)."""
    for name, v in (("gamma", gamma), ("lam", lam)):
        if not 0 <= v <= 1:
            raise ValueError(f"gae: {name} must be in [0, 1], got {v}")
    if kl_beta < 0 or value_lr <= 0:
        raise ValueError(f"gae: kl_beta must be >= 0 and value_lr > 0, got {kl_beta}, {value_lr}")
    return GAE(value_model, gamma, lam, kl_beta, whiten, value_lr, value_clip, value_model_factory)
