"""PPO's critic, a plug-in of the learner: the value model V_psi, its optimizer and its loss.

A method asks for one with a :class:`CriticSpec` (no state: a recipe of learning rate, clip and how
to build the model); each run builds its own :class:`Critic` from it, so one ``methods.ppo()``
object can start several runs that share nothing. Each step the learner fills ``Rollout.values``
(V(s_t) at sampling, aligned with ``input_ids``), the coefficient turns them into advantages and
returns (``coefficients.gae``: a pure function of the rollout), and after the policy's updates the
critic takes one AdamW step on

    L_V = 0.5 * mean over scored output tokens of max((V - R)^2, (clip(V, V_old +- c) - R)^2)

where R are the returns and V_old the values at sampling. The value model is any module
``value_model(input_ids, attention_mask) -> values [batch, seq]`` so aligned (``hf.ValueModel``
builds one from a transformers policy)."""

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .distributed import global_sum, sum_gradients, world_size
from .rollout import Rollout

_CRITIC_BUILDERS: list[Callable[[nn.Module], Optional[nn.Module]]] = []


def register_critic_builder(builder: Callable[[nn.Module], Optional[nn.Module]]) -> None:
    """Let ``builder(policy)`` build the value model of a critic given none (it returns None for a
    policy it does not know). ``unified_rl.hf`` registers one for transformers policies."""
    if builder not in _CRITIC_BUILDERS:
        _CRITIC_BUILDERS.insert(0, builder)


def default_critic(policy: nn.Module) -> nn.Module:
    """The value model the first registered builder makes for ``policy``."""
    for builder in _CRITIC_BUILDERS:
        critic = builder(policy)
        if critic is not None:
            return critic
    raise ValueError(f"critic: no value model for a {type(policy).__name__} policy: pass value_model= or value_model_factory= "
                     "(a transformers policy gets one once unified_rl.hf is imported)")


def scored_tokens(rollout: Rollout) -> Tensor:
    """Output tokens of the samples a reward function could score."""
    return rollout.completion_mask if rollout.scored is None else rollout.completion_mask & rollout.scored[:, None]


@dataclass(frozen=True)
class CriticSpec:
    """How a run builds its critic: ``model`` (a template each run copies), else
    ``factory(policy)``, else the registered builder for the policy's kind; AdamW at ``lr``; the
    value loss clipped to ``clip`` around the values at sampling (None: no clip)."""

    lr: float = 1e-4
    clip: Optional[float] = 0.2
    model: Optional[nn.Module] = field(default=None, repr=False, compare=False)
    factory: Optional[Callable[[nn.Module], nn.Module]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.lr > 0 or (self.clip is not None and not self.clip > 0):
            raise ValueError(f"critic: lr must be > 0 and clip > 0 or None, got {self.lr}, {self.clip}")

    def build(self, policy: nn.Module) -> "Critic":
        """This run's critic for ``policy``."""
        model = copy.deepcopy(self.model) if self.model is not None else self.factory(policy) if self.factory else default_critic(policy)
        return Critic(model, self.lr, self.clip)


class Critic:
    """A value model with its AdamW optimizer, owned by the learner (sharded and checkpointed with it)."""

    def __init__(self, model: nn.Module, lr: float = 1e-4, clip: Optional[float] = 0.2):
        self.model, self.clip = model, clip
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    @torch.no_grad()
    def values(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        """V(s_t) for every position of the rollout (read where ``completion_mask`` is True)."""
        return self.model(rollout.input_ids, rollout.attention_mask)

    def loss(self, rollout: Rollout) -> Float[Tensor, ""]:
        """The clipped value loss over every rank's scored output tokens (a collective)."""
        if rollout.returns is None or rollout.values is None:
            raise ValueError("critic: the value loss needs Rollout.returns and Rollout.values; fill values, then run coefficient.prepare")
        values = self.model(rollout.input_ids, rollout.attention_mask)
        target = rollout.returns.to(values.dtype)
        err = (values - target) ** 2
        if self.clip is not None:
            old = rollout.values.to(values.dtype)
            clipped = old + (values - old).clamp(-self.clip, self.clip)
            err = torch.maximum(err, (clipped - target) ** 2)
        m = scored_tokens(rollout)
        return 0.5 * torch.where(m, err, torch.zeros((), dtype=err.dtype)).sum() / max(int(global_sum(int(m.sum()))), 1)

    def backward(self, rollout: Rollout) -> float:
        """The value loss's gradient in ``.grad``. Under torchrun each rank's loss has the union
        batch's normaliser and the ranks' gradients are summed: by FSDP2 when the learner sharded the
        value model, else here (a whole model on every rank, as under DDP), so every rank takes the
        one-process step. Returns the (global) loss."""
        loss = self.loss(rollout)
        loss.backward()
        sum_gradients(self.model.parameters())
        return float(global_sum(float(loss.detach())))

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One AdamW step on this batch; its ``value/loss``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.backward(rollout)
        self.optimizer.step()
        return {"value/loss": loss}

    def state_dict(self) -> dict[str, Any]:
        """The value model and its optimizer; none under torchrun, where the checkpoint holds them as
        DCP shards."""
        if world_size() > 1:
            return {}
        return {"value_model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            self.model.load_state_dict(state["value_model"])
            self.optimizer.load_state_dict(state["optimizer"])
