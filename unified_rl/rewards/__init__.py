"""Reward functions: ``reward(rollout, texts) -> rollout`` with rewards (and scored / step rewards)."""

from .answers import AfterMarker, normalize_number
from .combine import FromCallable, WeightedSum
from .concurrent import Concurrent
from .length import OverlongPenalty, overlong_penalty
from .model import ModelReward
from .math import MathVerify, math_reward, verify_answer
from .rule import OutcomeReward, ProcessReward

__all__ = ["Concurrent", "MathVerify", "math_reward", "verify_answer", "AfterMarker", "normalize_number", "FromCallable", "WeightedSum", "ModelReward", "OverlongPenalty", "overlong_penalty", "OutcomeReward", "ProcessReward"]
