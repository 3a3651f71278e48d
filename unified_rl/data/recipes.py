"""Recipes: how a method's data source is built once the run's rows, tokenizer, sampler and
policy are known. A preset (``methods.grpo()`` ...) holds a recipe; the Trainer calls
``recipe.build(setup)``. Pass a ready ``DataSource`` to the Trainer (``data_source=``) to skip it.

* :class:`Supervised` -- the rows' reference completions (SFT);
* :class:`Sampled`    -- G completions per question from the current policy (online: Online RFT,
  PPO, GRPO) or from a frozen copy of the starting policy (offline: RFT);
* :class:`Pairs`      -- DPO pairs: one correct and one wrong completion of the frozen policy;
* :class:`RankedPairs` -- online DPO's pairs: two samples of the current policy, ranked by reward;
* :class:`Preferences` -- DPO pairs given by a chosen/rejected dataset;
* :class:`Unpaired`   -- KTO's labelled rows: samples of the frozen policy, desirable when correct;
* :class:`UnpairedPreferences` -- KTO's labelled rows from a chosen/rejected dataset;
* :class:`Dynamic`    -- DAPO's dynamic sampling around another recipe: only groups with a reward spread;
* :class:`Mixed`      -- each batch from one recipe or another by a seeded coin (GKD's on-policy fraction).
"""

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Protocol, Sequence

from torch import nn

from ..protocols import DataSource, RewardFunction, Sampler
from .dynamic import DynamicSampling
from .encoder import Encoder
from .mixed import MixedSource
from .ranked import RankedPairSource
from .unpaired import UnpairedPreferenceSource, UnpairedSource
from .sources import PairSource, PreferenceSource, SampledSource, SupervisedSource


@dataclass
class Setup:
    """What a recipe builds from: the run's rows, encoder, sampler, policy, reward and settings."""

    rows: Sequence[dict]
    encoder: Encoder
    sampler: Sampler
    policy: nn.Module
    reward: Optional[RewardFunction] = None
    seed: int = 0
    max_new_tokens: int = 64
    temperature: float = 1.0


class SourceRecipe(Protocol):
    """Builds a method's DataSource for one run."""

    def build(self, setup: Setup) -> DataSource:
        """The data source for ``setup``."""
        ...


@dataclass(frozen=True)
class _FromRows(SourceRecipe):
    """A source that reads the rows as they are (``source(rows, encoder, seed=)``)."""

    source: ClassVar[type]

    def build(self, setup: Setup) -> DataSource:
        """``source`` over the rows."""
        return self.source(setup.rows, setup.encoder, seed=setup.seed)


@dataclass(frozen=True)
class Supervised(_FromRows):
    """Each row's reference completion (column ``completion``), as a :class:`SupervisedSource`; temperature 1."""

    source = SupervisedSource


@dataclass(frozen=True)
class Sampled(SourceRecipe):
    """``samples_per_question`` completions per question from the current policy (``online``) or
    from a frozen copy of the policy as it is when the run starts (offline)."""

    samples_per_question: int = 1
    online: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_question, int) or self.samples_per_question < 1:
            raise ValueError(f"Sampled: samples_per_question must be an integer >= 1, got {self.samples_per_question!r}")

    def build(self, setup: Setup) -> DataSource:
        """A :class:`SampledSource` drawing with the run's sampler."""
        frozen = None if self.online else copy.deepcopy(setup.policy)
        return SampledSource(setup.rows, setup.encoder, setup.sampler, samples_per_question=self.samples_per_question, frozen=frozen,
                             max_new_tokens=setup.max_new_tokens, temperature=setup.temperature, seed=setup.seed)


@dataclass(frozen=True)
class Pairs(SourceRecipe):
    """DPO pairs as in the paper: ``samples_per_question`` draws per question from the frozen starting
    policy, judged by the run's reward; one correct o+ and one wrong o- kept per question."""

    samples_per_question: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_question, int) or self.samples_per_question < 2:
            raise ValueError(f"Pairs: samples_per_question must be an integer >= 2 (a pair needs two samples), got {self.samples_per_question!r}")

    def build(self, setup: Setup) -> DataSource:
        """A :class:`PairSource` over an offline :class:`Sampled` source."""
        if setup.reward is None:
            raise ValueError("Pairs: DPO pairs are judged by a reward function; pass reward= to the Trainer")
        return PairSource(Sampled(self.samples_per_question, online=False).build(setup), setup.reward)


@dataclass(frozen=True)
class RankedPairs(SourceRecipe):
    """Online DPO's pairs: two samples per question from the current policy, the higher-rewarded
    chosen (ties: the first), as a :class:`RankedPairSource`."""

    def build(self, setup: Setup) -> DataSource:
        """A :class:`RankedPairSource` over an online :class:`Sampled` source of two per question."""
        if setup.reward is None:
            raise ValueError("RankedPairs: online DPO ranks its samples by a reward function; pass reward= to the Trainer")
        return RankedPairSource(Sampled(2).build(setup), setup.reward)


@dataclass(frozen=True)
class Preferences(_FromRows):
    """Chosen/rejected pairs given by the rows themselves (columns ``prompt``, ``chosen``,
    ``rejected``), as a :class:`PreferenceSource`."""

    source = PreferenceSource


@dataclass(frozen=True)
class Unpaired(SourceRecipe):
    """KTO's rows: ``samples_per_question`` draws per question from the frozen starting policy,
    judged by the run's reward, each scored one desirable when correct, with their mismatched rows
    (an :class:`UnpairedSource`)."""

    samples_per_question: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.samples_per_question, int) or self.samples_per_question < 1:
            raise ValueError(f"Unpaired: samples_per_question must be an integer >= 1, got {self.samples_per_question!r}")

    def build(self, setup: Setup) -> DataSource:
        """An :class:`UnpairedSource` over an offline :class:`Sampled` source."""
        if setup.reward is None:
            raise ValueError("Unpaired: KTO's samples are labelled by a reward function; pass reward= to the Trainer")
        return UnpairedSource(Sampled(self.samples_per_question, online=False).build(setup), setup.reward)


@dataclass(frozen=True)
class UnpairedPreferences(_FromRows):
    """KTO's rows from a chosen/rejected dataset (chosen desirable, rejected not), as an
    :class:`UnpairedPreferenceSource`."""

    source = UnpairedPreferenceSource


@dataclass(frozen=True)
class Dynamic(SourceRecipe):
    """DAPO's dynamic sampling: ``inner``'s batches scored by the run's reward, keeping only groups
    whose rewards are not all equal, drawing up to ``max_batches`` batches per step."""

    inner: SourceRecipe = Sampled(8)
    max_batches: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.max_batches, int) or self.max_batches < 1:
            raise ValueError(f"Dynamic: max_batches must be an integer >= 1, got {self.max_batches!r}")

    def build(self, setup: Setup) -> DataSource:
        """A :class:`DynamicSampling` source around ``inner``'s, judged by the run's reward."""
        if setup.reward is None:
            raise ValueError("Dynamic: dynamic sampling keeps groups by their rewards; pass reward= to the Trainer")
        return DynamicSampling(self.inner.build(setup), setup.reward, setup.encoder.tokenizer.pad_token_id, self.max_batches)


@dataclass(frozen=True)
class Mixed(SourceRecipe):
    """Each batch from ``online`` with probability ``fraction``, else from ``offline`` (GKD's
    lambda: on-policy samples or the rows' own completions), as a :class:`MixedSource`."""

    fraction: float = 0.5
    online: SourceRecipe = Sampled(1)
    offline: SourceRecipe = Supervised()

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"Mixed: fraction must be in [0, 1], got {self.fraction!r}")

    def build(self, setup: Setup) -> DataSource:
        """Both sources, built on the same rows, the coin seeded from the run's seed (one source
        alone at a fraction of 0 or 1: rows without completions can be used fully on-policy)."""
        if self.fraction in (0, 1):
            return (self.online if self.fraction == 1 else self.offline).build(setup)
        return MixedSource(self.online.build(setup), self.offline.build(setup), self.fraction, seed=setup.seed + 7)


@dataclass(frozen=True)
class Given(SourceRecipe):
    """A data source built already (any ``DataSource``)."""

    source: Any

    def build(self, setup: Setup) -> DataSource:
        """The given source, as it is."""
        return self.source
