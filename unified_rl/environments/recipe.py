"""A method with an environment: its data from multi-turn episodes, its rewards from the
environments -- a composition (``with_environment(methods.grpo(), factory)``), not a new method."""

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

from ..data.recipes import Dynamic, Sampled, Setup, SourceRecipe
from ..protocols import DataSource, RewardFunction
from ..rollout import Rollout
from .protocol import EnvironmentFactory
from .source import EpisodeSource, Limits


@dataclass(frozen=True)
class Episodes(SourceRecipe):
    """``samples_per_question`` episodes per question with a fresh environment from ``environment``
    each, within ``limits``; turns sampled from the current policy with the run's sampler."""

    environment: EnvironmentFactory
    samples_per_question: int = 1
    limits: Limits = Limits()
    online: ClassVar[bool] = True

    def build(self, setup: Setup) -> DataSource:
        """An :class:`EpisodeSource` over the run's rows."""
        return EpisodeSource(setup.rows, setup.encoder, setup.sampler, self.environment, samples_per_question=self.samples_per_question,
                             max_new_tokens=setup.max_new_tokens, temperature=setup.temperature, seed=setup.seed, limits=self.limits)


class EnvironmentScores(RewardFunction):
    """The reward of a method whose environments score its episodes: the rollout arrives scored, so
    this is never asked to score one (an error says so if it is)."""

    def __call__(self, rollout: Rollout, texts: Sequence[Any]) -> Rollout:
        raise ValueError("the rollout came without rewards, but this method's rewards come from its environments "
                         "(use an EpisodeSource, or give the method a reward function)")


def with_environment(method: Any, environment: EnvironmentFactory, limits: Limits = Limits(),
                     samples_per_question: Optional[int] = None) -> Any:
    """``method`` trained on episodes with ``environment`` (a factory of :class:`Environment`): its
    data source becomes :class:`Episodes` (G from the method's own sampled recipe unless given),
    its reward the environments'. The coefficient is unchanged: an environment's tokens are
    context (``completion_mask`` 0), so their GC is 0 and no normaliser counts them."""
    if isinstance(method.data_source, Dynamic):
        raise ValueError(f"with_environment: method {method.name!r} uses dynamic sampling, which is not run over episodes")
    source = method.data_source
    if samples_per_question is None:
        if not isinstance(source, Sampled) or not source.online:
            raise ValueError(f"with_environment: method {method.name!r} does not sample from the policy, so episodes have no group "
                             "size to take from it; give samples_per_question=")
        samples_per_question = source.samples_per_question
    return dataclasses.replace(method, data_source=Episodes(environment, samples_per_question, limits), reward=EnvironmentScores())
