"""The plug-ins of the unified paradigm (DeepSeekMath §5.2), as structural Protocols: the contract.

A training method is a triple (DataSource, RewardFunction, GradientCoefficient); the engine
computes  grad J = sum_{b,t} weights[b,t] * GC[b,t] * grad log pi_theta(o_t | q, o_<t).
Completions come from a ``Sampler``; a ``ModelAdapter`` tells the engine how a model family
computes log-probs (the transformers one lives in ``unified_rl.hf``).

Optional hooks (``metrics``, ``observe``, ``state_dict`` ...) have no-op defaults in the
Protocol classes themselves: subclass a Protocol explicitly to inherit them. Nothing in the
library probes for a hook with ``hasattr``; :func:`check_coefficient` checks the whole contract
once, where a coefficient enters the Trainer.
"""

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol, Sequence, runtime_checkable

from jaxtyping import Float, Int
from torch import Tensor, nn

from .rollout import Rollout, RolloutField


def check_needs(needs: Any, owner: str) -> frozenset:
    """``needs`` as a frozenset of Rollout field names; a ValueError naming ``owner`` and the
    unknown name otherwise (so a misspelt field fails when the piece is built, not mid-run)."""
    if isinstance(needs, str) or not isinstance(needs, (set, frozenset, tuple, list)):
        raise TypeError(f"{owner}: needs must be a set of Rollout field names, got {type(needs).__name__}")
    known = Rollout.field_names()
    for name in needs:
        if name not in known:
            raise ValueError(f"{owner}: needs names {name!r}, which is not a Rollout field (fields: {', '.join(sorted(known))})")
    return frozenset(needs)


class Stateful(Protocol):
    """Anything a checkpoint saves: ``state_dict`` holds tensors and plain values (never pickled)."""

    def state_dict(self) -> dict:
        """State a checkpoint must keep. Default: none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`. Default: nothing to restore."""


@runtime_checkable
class DataSource(Stateful, Protocol):
    """Where (q, o) comes from: a supervised set, a frozen sampler, the current policy, pairs."""

    def sample(self, policy: Any, n: int) -> Rollout:
        """``n`` questions' worth of sequences (a group of G per question where relevant).

        Offline sources may ignore ``policy``. The rollout's ``texts`` hold the decoded samples
        (prompt, completion and the dataset's columns) for the reward function, and its
        ``temperature`` the temperature they were sampled at. ``state_dict`` keeps the data
        position and RNG state, so a resumed run draws exactly the same data."""
        ...

    def metrics(self) -> dict[str, float]:
        """Scalar metrics of the last ``sample`` call (e.g. dynamic sampling's kept groups). Default: none."""
        return {}


@runtime_checkable
class RewardFunction(Stateful, Protocol):
    """What scores the data: fills ``rewards`` (and ``scored``, ``step_rewards``/``step_mask``).

    The optional hooks serve learned rewards (Algorithm 1 re-trains the reward model between
    iterations): ``observe`` sees every scored training batch, ``end_iteration`` re-trains."""

    def __call__(self, rollout: Rollout, texts: Sequence[Any]) -> Rollout:
        """The rollout with its rewards filled; ``texts`` are ``rollout.texts``."""
        ...

    def observe(self, rollout: Rollout) -> None:
        """See a batch the policy trained on (a learned reward keeps it to re-train on). Default: nothing."""

    def end_iteration(self, replay: float) -> dict[str, float]:
        """Re-train on what was observed, replaying ``replay`` x as much history. Default: nothing."""
        return {}

    def metrics(self) -> dict[str, float]:
        """Scalar metrics of the last call (e.g. calls that timed out). Default: none."""
        return {}


@runtime_checkable
class GradientCoefficient(Stateful, Protocol):
    """The per-token gradient coefficient GC(q, o, t).

    ``needs``: the Rollout fields the coefficient reads (the loop fills only these: no reference
    pass when nothing reads ``ref_logprobs``); validate it with :func:`check_needs`.
    ``couples_group``: a token's GC reads other sequences' log-probs (DPO pairs), so the engine
    never splits a group across micro-batches. ``prepare`` runs once per batch without grad
    (advantages and aggregation weights from the whole batch); ``__call__`` maps the current
    log-probs to GC, also without grad. The other hooks (``metrics``; ``state_dict`` from
    :class:`Stateful`) are optional, with no-op defaults. A coefficient owns no model: one that
    reads ``values`` gets them from the run's critic (``Method.critic``), which the learner owns.
    """

    needs: frozenset[RolloutField]
    couples_group: bool = False
    sampled: bool = True  # it has a GC on the sampled tokens (False: only terms over the vocabulary)
    vocabulary: tuple = ()  # terms over the vocabulary (``coefficients.vocabulary``), in a pass of their own

    def prepare(self, rollout: Rollout) -> Rollout:
        """Advantages and aggregation ``weights`` from the whole batch, without grad."""
        ...

    def __call__(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        """GC for every token given the current log-probs (0 outside output tokens), without grad."""
        ...

    def metrics(self, rollout: Rollout, logprobs: Float[Tensor, "batch seq"], gc: Float[Tensor, "batch seq"]) -> dict[str, float]:
        """Scalar metrics of one batch (see docs/metrics.md). Default: none."""
        return {}


@dataclass
class Generated:
    """What a sampler returns, per sample (prompt-major, G consecutive samples per prompt): the
    prompt's and the completion's token ids (the completion ends in eos unless it was cut at
    ``max_new_tokens``) and the sampler's log-prob of each completion token."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[Tensor]  # one 1-d tensor per sample, as long as its completion


@runtime_checkable
class Sampler(Protocol):
    """Draws completions: ``group_size`` per prompt by ancestral sampling from
    softmax(logits / temperature) (``temperature == 0``: greedy), recording the sampler's log-prob
    of every sampled token (before any processing)."""

    #: True when the recorded log-probs are the policy's own (same model, same numerics), so they
    #: serve as log pi_old; a separate engine (vLLM) sets False and the trainer recomputes pi_old.
    exact: bool = True

    def sample(self, policy: nn.Module, prompts: Sequence[Sequence[int]], group_size: int, max_new_tokens: int,
               temperature: float, generator: Optional[Any]) -> Generated:
        """``group_size`` completions for each of ``prompts`` (token ids) from ``policy``."""
        ...


@runtime_checkable
class ModelAdapter(Protocol):
    """How the engine computes log pi(o_t) with one family of models (the seam where transformers,
    FSDP2 or PEFT plug in; see ``engine.register_adapter``)."""

    def accepts(self, model: nn.Module) -> bool:
        """True if this adapter knows how to run ``model``."""
        ...

    def passes(self, model: nn.Module, rollout: Rollout, plan: Any, keep_groups: bool
               ) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Float[Tensor, "rows cols"]]]:
        """(row index, lo, hi, view, logp) per micro-batch within ``plan.max_tokens``: ``view`` is
        the rows' columns [lo, hi), ``logp`` its differentiable log-probs (0 outside completions).
        A caller that differentiates runs each logp's backward before asking for the next."""
        ...

    def head_states(self, model: nn.Module, mb: Any) -> tuple[Tensor, Any, int]:
        """(states, head, vocabulary size) at ``mb``'s output positions, in ``completion_mask``'s
        order: ``head(states[i:j])`` gives those positions' logits (the engine's pass over the
        vocabulary runs the head chunk by chunk)."""
        ...


def conforms(obj: Any, protocol: type, where: str) -> None:
    """Raise a TypeError naming every member of ``protocol`` that ``obj`` lacks (checked once, where
    a plug-in enters the Trainer; nothing probes for hooks afterwards)."""
    annotated = {name for klass in protocol.__mro__ for name in getattr(klass, "__annotations__", {})}
    members = sorted({m for m in dir(protocol) if not m.startswith("_")} | {m for m in annotated if not m.startswith("_")})
    members += ["__call__"] if "__call__" in vars(protocol) else []
    missing = [m for m in members if not hasattr(obj, m)]
    if missing:
        raise TypeError(f"{where} {type(obj).__name__} does not satisfy url.{protocol.__name__}: no {', '.join(missing)} "
                        f"(subclass url.{protocol.__name__} to inherit the optional hooks' no-op defaults)")


def check_coefficient(coefficient: Any, where: str = "coefficient") -> None:
    """Raise a TypeError naming what is missing if ``coefficient`` does not satisfy
    :class:`GradientCoefficient`, and a ValueError if its ``needs`` names a non-field."""
    conforms(coefficient, GradientCoefficient, where)
    check_needs(coefficient.needs, f"{where} {type(coefficient).__name__}")
