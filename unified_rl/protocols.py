"""The three plug-ins of the unified paradigm (DeepSeekMath §5.2), as structural Protocols.

A training method is a triple (DataSource, RewardFunction, GradientCoefficient); the engine
computes  grad J = sum_{b,t} weights[b,t] * GC[b,t] * grad log pi_theta(o_t | q, o_<t).
No implementation inheritance: anything with these methods plugs in.
"""

from typing import Any, Protocol, Sequence, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from .rollout import Rollout


@runtime_checkable
class DataSource(Protocol):
    """Where (q, o) comes from: a supervised set, a frozen sampler, the current policy, pairs."""

    def sample(self, policy: Any, n: int) -> Rollout:
        """``n`` questions' worth of sequences (a group of G per question where relevant).

        Offline sources may ignore ``policy``. The rollout's ``texts`` hold the decoded samples
        (prompt, completion and the dataset's columns) for the reward function."""
        ...


@runtime_checkable
class RewardFunction(Protocol):
    """What scores the data: fills ``rewards`` (and ``scored``, ``step_rewards``/``step_mask``)."""

    def __call__(self, rollout: Rollout, texts: Sequence[Any]) -> Rollout: ...


@runtime_checkable
class GradientCoefficient(Protocol):
    """The per-token gradient coefficient GC(q, o, t).

    ``prepare`` runs once per batch without grad (advantages and aggregation weights from the
    whole batch); ``__call__`` maps the current log-probs to GC, also without grad.
    ``couples_group`` says whether a token's GC reads other sequences' log-probs (DPO pairs):
    the engine then never splits a group across micro-batches.
    """

    couples_group: bool

    def prepare(self, rollout: Rollout) -> Rollout:
        """Advantages and aggregation ``weights`` from the whole batch, without grad."""
        ...

    def __call__(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        """GC for every token given the current log-probs (0 outside output tokens), without grad."""
        ...

    def attach(self, policy: Any) -> None:
        """Optional: build models the coefficient owns (PPO's value model) from the policy."""
        ...
