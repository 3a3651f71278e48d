"""Reward functions: ``reward(rollout, texts) -> rollout`` with rewards (and scored / step rewards)."""

from .combine import FromCallable, WeightedSum
from .model import ModelReward, reward_model_from_policy, tiny_reward_model
from .rule import OutcomeReward, ProcessReward, extract_answer, normalize_number

__all__ = ["FromCallable", "WeightedSum", "ModelReward", "reward_model_from_policy", "tiny_reward_model", "OutcomeReward", "ProcessReward", "extract_answer", "normalize_number"]
