"""``Method``: a training method as a triple (data source recipe, reward, gradient coefficient)."""

from dataclasses import dataclass
from typing import Any, Optional

from ..data.recipes import Dynamic, Pairs, Sampled, SourceRecipe
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

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields this method fixes, read from what it does: its pieces' ``beta``,
        ``epsilon``, ``dpo_beta`` (``config_fields``) and its data source's samples per question
        (``group_size``, where it samples groups). The Trainer refuses a config that says otherwise."""
        out = dict(getattr(self.coefficient, "config_fields", {}))  # a coefficient written from scratch may fix none
        source = self.data_source.inner if isinstance(self.data_source, Dynamic) else self.data_source
        if isinstance(source, (Sampled, Pairs)) and source.samples_per_question > 1:
            out["group_size"] = source.samples_per_question
        return out
