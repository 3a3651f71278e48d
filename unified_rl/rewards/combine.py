"""Combining rewards, and adapting plain Python callables."""

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from ..data.chat import CHAT, as_messages
from ..protocols import RewardFunction
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
        name = self.name or _name(self.fn)
        values = self._values(texts)
        if len(values) != len(texts):
            raise ValueError(f"reward function {name!r} returned {len(values)} values for {len(texts)} samples")
        rewards, scored = [], []
        for i, v in enumerate(values):
            if v is None:
                rewards.append(0.0)
                scored.append(False)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"reward function {name!r} returned {v!r} ({type(v).__name__}) for sample {i}; expected a number or None")
            if not math.isfinite(v):
                raise ValueError(f"reward function {name!r} returned {v} for sample {i} (prompt {texts[i].prompt!r:.60})")
            rewards.append(float(v))
            scored.append(True)
        dev = rollout.input_ids.device
        return rollout.replace(rewards=torch.tensor(rewards, dtype=torch.float32, device=dev), scored=torch.tensor(scored, device=dev))


class _Composite(RewardFunction):
    """A reward made of parts: ``observe``, ``end_iteration`` and the checkpoint state reach every
    part, so a learned part (``ModelReward``) is re-trained (Algorithm 1) as it would be alone."""

    def _fns(self) -> list:
        raise NotImplementedError

    @staticmethod
    def _merged(per_part: list[dict[str, float]]) -> dict[str, float]:
        """The parts' metrics; a name two parts report with different values gets the part's index (``name/1``)."""
        out: dict[str, float] = {}
        for i, m in enumerate(per_part):
            for k, v in m.items():
                out[k if k not in out or out[k] == v else f"{k}/{i}"] = v
        return out

    def _outputs(self, rollout: Rollout, texts: Sequence[Sample]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each part's rewards, and the samples every part scored."""
        scored = torch.ones(rollout.batch_size, dtype=torch.bool, device=rollout.input_ids.device)
        rewards = []
        for fn in self._fns():
            out = fn(rollout, texts)
            rewards.append(out.rewards.float())
            if out.scored is not None:
                scored = scored & out.scored
        return rewards, scored

    def _combine(self, rewards: list[torch.Tensor]) -> torch.Tensor:
        """The parts' rewards, combined into one per sample."""
        raise NotImplementedError

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        rewards, scored = self._outputs(rollout, texts)
        total = self._combine(rewards)
        return rollout.replace(rewards=torch.where(scored, total, torch.zeros_like(total)), scored=scored)

    def observe(self, rollout: Rollout) -> None:
        for fn in self._fns():
            if hasattr(fn, "observe"):
                fn.observe(rollout)

    def end_iteration(self, replay: float) -> dict[str, float]:
        return self._merged([fn.end_iteration(replay) if hasattr(fn, "end_iteration") else {} for fn in self._fns()])

    def state_dict(self) -> dict:
        return {"parts": [fn.state_dict() if hasattr(fn, "state_dict") else {} for fn in self._fns()]}

    def load_state_dict(self, state: dict) -> None:
        if not state:  # a checkpoint from before composites kept their parts' state: nothing to restore
            return
        parts = state["parts"]
        if len(parts) != len(self._fns()):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint has {len(parts)} parts, this reward {len(self._fns())}")
        for fn, s in zip(self._fns(), parts):
            if hasattr(fn, "load_state_dict"):
                fn.load_state_dict(s)


@dataclass
class WeightedSum(_Composite):
    """r = sum_k w_k r_k over reward functions; a sample is scored only if every part scored it."""

    parts: Sequence[tuple[float, Any]]

    def _fns(self) -> list:
        return [fn for _, fn in self.parts]

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        if not self.parts:
            raise ValueError("WeightedSum: no parts")
        return super().__call__(rollout, texts)

    def _combine(self, rewards: list[torch.Tensor]) -> torch.Tensor:
        return sum(weight * r for (weight, _), r in zip(self.parts, rewards))

    def metrics(self) -> dict[str, float]:
        """The parts' metrics (summed where two parts report the same name)."""
        out: dict[str, float] = {}
        for _, fn in self.parts:
            for k, v in (fn.metrics() if isinstance(fn, RewardFunction) else {}).items():
                out[k] = out.get(k, 0.0) + v
        return out


@dataclass
class Product(_Composite):
    """r = prod_k r_k, for parts scoring in [0, 1] (e.g. a classifier's probability and a
    verifier's): a sample scores high only when every part accepts it. A sample is scored only if
    every part scored it. ``observe`` and ``end_iteration`` reach every part, so learned parts are
    re-trained (Algorithm 1) as a single reward would be."""

    parts: Sequence[Any]

    def __post_init__(self):
        if not self.parts:
            raise ValueError("Product: no parts")

    def _combine(self, rewards: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(rewards).prod(0)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """The product of the parts' ``score_pairs`` on (prompt, completion) pairs (learned parts: ``LearnedReward``)."""
        return torch.stack([fn.score_pairs(pairs) for fn in self.parts]).prod(0)

    def _fns(self) -> list:
        return list(self.parts)

    def metrics(self) -> dict[str, float]:
        return self._merged([fn.metrics() if hasattr(fn, "metrics") else {} for fn in self.parts])
