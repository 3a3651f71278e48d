"""Combining rewards, and adapting plain Python callables."""

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from ..data.chat import CHAT, as_messages
from ..protocols import RewardFunction, conforms
from ..rollout import Rollout, Sample


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def trl_arguments(texts: Sequence[Sample]) -> tuple[list, list, dict[str, list]]:
    """(prompts, completions, columns) as TRL passes them to a reward function: conversational
    samples as messages (the prompt's turns; the completion as one assistant turn), others as text;
    every other dataset column as a keyword list."""
    prompts = [s.columns.get(CHAT, s.prompt) for s in texts]
    completions = [as_messages(s.completion) if CHAT in s.columns else s.completion for s in texts]
    names = list(dict.fromkeys(k for s in texts for k in s.columns if k not in ("prompt", "completion", CHAT)))
    return prompts, completions, {k: [s.columns.get(k) for s in texts] for k in names}


def scored(rollout: Rollout, texts: Sequence[Sample], values: Sequence[Any], name: str) -> Rollout:
    """``rollout`` with ``values`` (one per sample, from the reward function ``name``) as its rewards:
    ``None`` marks a sample unscored (``scored=False``, its reward a placeholder that no baseline
    reads); a wrong count, NaN/inf or a non-number is an error that names the function and the sample."""
    if len(values) != len(texts):
        raise ValueError(f"reward function {name!r} returned {len(values)} values for {len(texts)} samples")
    rewards, ok = [], []
    for i, v in enumerate(values):
        if v is None:
            rewards.append(0.0)
            ok.append(False)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"reward function {name!r} returned {v!r} ({type(v).__name__}) for sample {i}; expected a number or None")
        if not math.isfinite(v):
            raise ValueError(f"reward function {name!r} returned {v} for sample {i} (prompt {texts[i].prompt!r:.60})")
        rewards.append(float(v))
        ok.append(True)
    dev = rollout.input_ids.device
    return rollout.replace(rewards=torch.tensor(rewards, dtype=torch.float32, device=dev), scored=torch.tensor(ok, device=dev))


@dataclass
class FromCallable(RewardFunction):
    """Adapts ``f(prompts, completions, **columns) -> list[float | None]`` (TRL's convention).

    ``None`` means "could not score": the sample is marked ``scored=False`` -- left out of group
    baselines and never counted as 0. NaN/inf, a wrong length or a non-number is an error that
    names the function and the sample; so is an exception, located by re-running sample by sample.
    """

    fn: Callable[..., Sequence[Optional[float]]]
    name: Optional[str] = None

    def _call(self, texts: Sequence[Sample]) -> Sequence[Any]:  # whatever the user returns; checked after
        prompts, completions, columns = trl_arguments(texts)
        return self.fn(prompts, completions, **columns)

    def _values(self, texts: Sequence[Sample]) -> list:
        """The function's values for ``texts``, in order; an exception is located by re-running sample by sample."""
        name = self.name or _name(self.fn)
        try:
            return list(self._call(texts))
        except Exception as batch_error:
            for i, s in enumerate(texts):
                try:
                    self._call([s])
                except Exception as e:
                    raise RuntimeError(f"reward function {name!r} raised on sample {i} (prompt {s.prompt!r:.60}): {e!r}") from e
            raise RuntimeError(f"reward function {name!r} raised on the batch: {batch_error!r}") from batch_error

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        return scored(rollout, texts, self._values(texts), self.name or _name(self.fn))


@dataclass
class Parts:
    """The parts of a composite reward, each checked against :class:`RewardFunction` when the
    composite is built. A composite holds one and hands it every hook: ``observe``,
    ``end_iteration`` and the checkpoint state reach every part, so a learned part
    (``ModelReward``) is re-trained (Algorithm 1) as it would be alone. One rule for the parts'
    metrics: a name two parts report with different values gets the later part's index (``name/1``)."""

    fns: list
    owner: str

    def __post_init__(self) -> None:
        if not self.fns:
            raise ValueError(f"{self.owner}: no parts")
        for i, fn in enumerate(self.fns):
            conforms(fn, RewardFunction, f"{self.owner} part {i}:")

    def outputs(self, rollout: Rollout, texts: Sequence[Sample]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each part's rewards, and the samples every part scored."""
        scored = torch.ones(rollout.batch_size, dtype=torch.bool, device=rollout.input_ids.device)
        rewards = []
        for fn in self.fns:
            out = fn(rollout, texts)
            rewards.append(out.rewards.float())
            if out.scored is not None:
                scored = scored & out.scored
        return rewards, scored

    @staticmethod
    def merged(per_part: list[dict[str, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, m in enumerate(per_part):
            for k, v in m.items():
                out[k if k not in out or out[k] == v else f"{k}/{i}"] = v
        return out

    def metrics(self) -> dict[str, float]:
        return self.merged([fn.metrics() for fn in self.fns])

    def observe(self, rollout: Rollout) -> None:
        for fn in self.fns:
            fn.observe(rollout)

    def end_iteration(self, replay: float) -> dict[str, float]:
        return self.merged([fn.end_iteration(replay) for fn in self.fns])

    def state_dict(self) -> dict:
        return {"parts": [fn.state_dict() for fn in self.fns]}

    def load_state_dict(self, state: dict) -> None:
        if not state:  # a checkpoint from before composites kept their parts' state: nothing to restore
            return
        parts = state["parts"]
        if len(parts) != len(self.fns):
            raise ValueError(f"{self.owner}.load_state_dict: the checkpoint has {len(parts)} parts, this reward {len(self.fns)}")
        for fn, s in zip(self.fns, parts):
            fn.load_state_dict(s)


@dataclass
class Composite(RewardFunction):
    """A reward combined from ``parts`` by ``combine`` (a function of the parts' reward tensors, in
    order); a sample is scored only if every part scored it. Every hook reaches every part (see
    :class:`Parts`); :func:`WeightedSum` and :func:`Product` build the two common ones."""

    parts: Sequence[Any]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]
    name: str = "Composite"

    def __post_init__(self) -> None:
        self.held = Parts(list(self.parts), self.name)

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        rewards, ok = self.held.outputs(rollout, texts)
        total = self.combine(rewards)
        return rollout.replace(rewards=torch.where(ok, total, torch.zeros_like(total)), scored=ok)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """The parts' ``score_pairs`` on (prompt, completion) pairs, combined (learned parts: ``LearnedReward``)."""
        return self.combine([fn.score_pairs(pairs) for fn in self.parts])

    def observe(self, rollout: Rollout) -> None:
        self.held.observe(rollout)

    def end_iteration(self, replay: float) -> dict[str, float]:
        return self.held.end_iteration(replay)

    def metrics(self) -> dict[str, float]:
        return self.held.metrics()

    def state_dict(self) -> dict:
        return self.held.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.held.load_state_dict(state)


def WeightedSum(parts: Sequence[tuple[float, Any]]) -> Composite:  # noqa: N802 -- named as the reward it builds
    """r = sum_k w_k r_k over ``(w_k, reward function)`` parts."""
    weights = [float(w) for w, _ in parts]
    return Composite([fn for _, fn in parts], lambda rs: sum(w * r for w, r in zip(weights, rs)), "WeightedSum")


def Product(parts: Sequence[Any]) -> Composite:  # noqa: N802 -- named as the reward it builds
    """r = prod_k r_k, for parts scoring in [0, 1] (e.g. a classifier's probability and a
    verifier's): a sample scores high only when every part accepts it."""
    return Composite(list(parts), lambda rs: torch.stack(rs).prod(0), "Product")
