"""The reference policy pi_ref: a frozen copy of the starting policy, or -- for a LoRA policy --
the policy itself with its adapters off (the base model: no second copy in memory; for the pass
over the vocabulary, :class:`BaseModel`)."""

import copy
from typing import Any

from jaxtyping import Float
from torch import Tensor, nn

from .. import engine
from ..rollout import Rollout
from .distributed import gathered
from .lora import adapters_off, is_peft


class BaseModel(nn.Module):
    """A LoRA policy's base model as a model of its own, for the engine's pass over the vocabulary
    (``kl_full`` reads pi_ref's whole distribution): its head states are the policy's with the
    adapters off, and its train/eval mode is the policy's. It holds no parameters of its own (the
    policy is not registered as a submodule) and no second copy of the weights."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.__dict__["policy"] = policy

    @property
    def training(self) -> bool:  # the policy's mode: nn.Module's train() and eval() set it through here
        return self.policy.training

    @training.setter
    def training(self, mode: bool) -> None:
        if "policy" in self.__dict__:  # nn.Module.__init__ sets it before the policy is there
            self.policy.train(mode)


class BaseModelAdapter(engine.PlainAdapter):
    """The engine's adapter for :class:`BaseModel`: the policy's head states with its adapters off."""

    def accepts(self, model: Any) -> bool:
        """True for a :class:`BaseModel`."""
        return isinstance(model, BaseModel)

    def head_states(self, model: Any, mb: Rollout) -> tuple[Tensor, Any, int]:
        """See :class:`~unified_rl.protocols.ModelAdapter` (the head is the base model's: LoRA leaves it as it is)."""
        with adapters_off(model.policy):
            return engine.adapter_for(model.policy).head_states(model.policy, mb)


class Reference:
    """pi_ref for ``policy``: :meth:`logprobs` of a rollout, :meth:`reset` to the current policy
    (iterative RL), and a ``state_dict`` for checkpoints (empty for LoRA: the base is frozen)."""

    def __init__(self, policy: nn.Module):
        self.policy = policy
        self.copy = None if is_peft(policy) else copy.deepcopy(policy).requires_grad_(False).eval()

    @property
    def shares_policy(self) -> bool:
        """True when pi_ref is the policy with adapters off (LoRA), so it cannot be reset."""
        return self.copy is None

    def logprobs(self, rollout: Rollout, plan: engine.ExecutionPlan) -> Float[Tensor, "batch seq"]:
        """log pi_ref of every output token of ``rollout`` (no grad)."""
        if self.copy is not None:
            with gathered(self.copy):  # FSDP2-sharded (under torchrun): its full weights for the pass
                return engine.logprobs(self.copy, rollout, plan)
        with adapters_off(self.policy):
            return engine.logprobs(self.policy, rollout, plan)

    @property
    def distribution_model(self) -> Any:
        """What the pass over the vocabulary reads pi_ref's distribution from: the copy, or the LoRA
        policy's :class:`BaseModel`."""
        return self.copy if self.copy is not None else BaseModel(self.policy)

    def reset(self) -> None:
        """pi_ref <- pi_theta (Algorithm 1's outer loop)."""
        if self.copy is None:
            raise ValueError("a LoRA policy's reference is its base model (adapters off); it cannot be reset to the policy: "
                             "set reset_reference = false, or train without LoRA")
        self.copy.load_state_dict(self.policy.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """The reference's weights (none for LoRA)."""
        return {} if self.copy is None else self.copy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if self.copy is not None:
            self.copy.load_state_dict(state)
