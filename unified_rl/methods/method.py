"""``Method``: a training method as a triple (data source recipe, reward, gradient coefficient)."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..data.recipes import Dynamic, Sampled, SourceRecipe
from ..critic import CriticSpec
from ..protocols import GradientCoefficient, RewardFunction, check_coefficient


@dataclass(frozen=True)
class Method:
    """A training method: where the data comes from (a recipe), what scores it, and the per-token GC.

    ``reward`` may be None: the run's reward (``Trainer(reward=...)``) is used, and a method whose
    coefficient reads rewards cannot run without one. ``critic``: how each run builds the value
    model a coefficient reading ``values`` needs (PPO); the run's learner owns and trains it.
    """

    name: str
    coefficient: GradientCoefficient
    data_source: SourceRecipe
    reward: Optional[RewardFunction] = None
    critic: Optional[CriticSpec] = None

    def __post_init__(self) -> None:
        check_coefficient(self.coefficient, f"method {self.name!r}: coefficient")
        if "values" in self.coefficient.needs and self.critic is None:
            raise ValueError(f"method {self.name!r}: its coefficient reads Rollout.values, so it needs a critic "
                             "(Method(..., critic=CriticSpec()))")

    def samples_online(self) -> bool:
        """True when its data come from the current policy's sampler (Online RFT, GRPO, PPO ...)."""
        source = self.data_source.inner if isinstance(self.data_source, Dynamic) else self.data_source
        return isinstance(source, Sampled) and source.online or getattr(source, "online", None) is True  # or episodes

    def with_sampler_correction(self, correction: Any) -> "Method":
        """This method with its policy terms weighted by the sampler-mismatch ``correction`` (a
        ``coefficients.sampler_correction``): a composition, for samplers that are another engine
        (vLLM). A ValueError for a method that does not sample online or whose coefficient is no chain."""
        from ..coefficients.compose import Chain

        if not self.samples_online() or not isinstance(self.coefficient, Chain):
            raise ValueError(f"method {self.name!r}: a sampler correction weighs samples drawn from the policy by another "
                             "engine; this method does not sample online with a chain of pieces")
        return dataclasses.replace(self, coefficient=self.coefficient.with_correction(correction))
