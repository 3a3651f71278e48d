"""PPO's value model for transformers policies: the policy's trunk with a scalar head."""

import copy
from typing import Optional

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from .lora import unwrap


class ValueModel(nn.Module):
    """A causal-LM trunk with a scalar head: values[b, t] = V(input_ids[b, :t])."""

    def __init__(self, trunk: nn.Module, hidden_size: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=position_ids).last_hidden_state
        v = self.head(h).squeeze(-1)
        return torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)


def value_model_from_policy(policy: nn.Module) -> ValueModel:
    """A value model initialised from a copy of the policy's trunk (a fresh zero head)."""
    policy = unwrap(policy)  # LoRA: the adapted model (its copied adapters train, its base stays frozen)
    trunk = copy.deepcopy(policy.base_model)
    weight = next(trunk.parameters())
    return ValueModel(trunk, policy.config.hidden_size).to(device=weight.device, dtype=weight.dtype)


def critic_for(policy: nn.Module) -> Optional[ValueModel]:
    """PPO's default value model for a transformers policy (:func:`value_model_from_policy`); None
    for another kind of model (registered with ``critic.register_critic_builder``)."""
    return value_model_from_policy(policy) if isinstance(unwrap(policy), PreTrainedModel) else None
