"""``Method``: a training method as a triple (data source recipe, reward, gradient coefficient)."""

from dataclasses import dataclass
from typing import Optional

from ..data.recipes import SourceRecipe
from ..protocols import GradientCoefficient, RewardFunction, check_coefficient


@dataclass(frozen=True)
class Method:
    """A training method: where the data comes from (a recipe), what scores it, and the per-token GC.

    ``reward`` may be None: the run's reward (``Trainer(reward=...)``) is used, and a method whose
    coefficient reads rewards cannot run without one.
    """

    name: str
    coefficient: GradientCoefficient
    data_source: SourceRecipe
    reward: Optional[RewardFunction] = None

    def __post_init__(self) -> None:
        check_coefficient(self.coefficient, f"method {self.name!r}: coefficient")
