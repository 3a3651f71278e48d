"""Reward functions: ``reward(rollout, texts) -> rollout`` with rewards (and scored / step rewards)."""

from .answers import AfterMarker, normalize_number
from .combine import Composite, FromCallable, Product, WeightedSum
from .concurrent import Concurrent
from .length import OverlongPenalty, overlong_penalty
from .model import LearnedReward, ModelReward
from .math import MathVerify, math_reward, verify_answer
from .rule import OutcomeReward, ProcessReward
from .verifier import VerifierReward

__all__ = ["Concurrent", "MathVerify", "math_reward", "verify_answer", "AfterMarker", "normalize_number", "FromCallable", "Composite", "WeightedSum", "Product", "LearnedReward", "ModelReward", "VerifierReward", "OverlongPenalty", "overlong_penalty", "OutcomeReward", "ProcessReward"]
