"""Verifiable math answers through math-verify (the ``[math]`` extra): boxed answers, fractions,
LaTeX and expression equivalence, as TRL's and open-r1's accuracy rewards check them.

math-verify's own timeouts use ``signal.alarm``, which raises inside threads; here they are off
(``parsing_timeout=None``, ``timeout_seconds=None``) and each call runs under
:class:`~unified_rl.rewards.concurrent.Concurrent`'s timeout instead, in worker processes by
default (verification is CPU-bound Python). Results are cached by (reference answer, completion):
repeated samples, common in a GRPO group, are verified once.

Scores: 1 if the completion's answer equals the reference, 0 if it differs or the completion gives
no answer (an unscored "no answer" would let a policy escape its penalty by not answering), ``None``
(unscored, counted as ``reward/unverifiable``) if the reference cannot be parsed or verification
raises, and ``None`` on a timeout (``reward/timeouts``).
"""

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..protocols import RewardFunction
from ..rollout import Rollout, Sample
from .combine import scored
from .concurrent import Concurrent

CACHE_LIMIT = 100_000


def _parse(text: str, raise_on_error: bool) -> list:
    from math_verify import parse

    return parse(text, parsing_timeout=None, raise_on_error=raise_on_error)


def verify_answer(prompts: Sequence[Any], completions: Sequence[Any], *, column: str = "answer", **columns: Sequence[Any]
                  ) -> list[Optional[float]]:
    """TRL-style reward: 1.0 / 0.0 per completion against ``columns[column]``, None where it cannot
    be verified (see the module docstring). Completions may be text or messages."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call that its own timeouts are off
    from math_verify import verify

    out: list[Optional[float]] = []
    for completion, gold in zip(completions, columns[column]):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        try:
            reference = _parse(str(gold), False) or _parse(f"${gold}$", False)
            if not any(not isinstance(x, str) for x in reference):  # only the raw-text fallback: not parsed
                out.append(None)
                continue
            answer = _parse(text, True)
            out.append(float(verify(reference, answer, timeout_seconds=None, raise_on_error=True)) if answer else 0.0)
        except Exception:  # sympy could not handle this answer: unverifiable, not wrong
            out.append(None)
    return out


@dataclass
class MathVerify(RewardFunction):
    """math-verify's judgement of each completion against the ``column`` answer, through ``calls``
    (concurrently, a timeout per sample), cached; build it with :func:`math_reward`."""

    calls: Concurrent
    column: str = "answer"
    _timeouts: int = field(default=0, init=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)
    _unverifiable: int = field(default=0, init=False, repr=False)

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        return scored(rollout, texts, self._values(texts), "math_verify")

    def _values(self, texts: Sequence[Sample]) -> list:
        for i, s in enumerate(texts):
            if s.columns.get(self.column) is None or not str(s.columns[self.column]).strip():
                raise ValueError(f"math reward: sample {i} (prompt {s.prompt!r:.60}) has no {self.column!r}; it cannot be scored")
        keys = [(str(s.columns[self.column]), s.completion) for s in texts]
        first: dict = {}  # each uncached (answer, completion) once, with the first sample that has it
        for s, k in zip(texts, keys):
            if k not in self._cache:
                first.setdefault(k, s)
        todo = list(first)
        fresh = self.calls.values(list(first.values())) if todo else []
        late = {todo[i] for i in self.calls.late} if todo else set()
        if len(self._cache) + len(todo) > CACHE_LIMIT:
            self._cache.clear()
        values = dict(zip(todo, fresh))
        self._cache.update({k: v for k, v in values.items() if k not in late})  # a timeout may pass another time
        out = [self._cache[k] if k in self._cache else values[k] for k in keys]
        self._timeouts = sum(k in late for k in keys)
        self._unverifiable = sum(v is None for v in out) - self._timeouts
        return out

    def metrics(self) -> dict[str, float]:
        """``reward/timeouts`` and ``reward/unverifiable`` of the last batch (distinct answers)."""
        return {"reward/timeouts": float(self._timeouts), "reward/unverifiable": float(self._unverifiable)}

    def close(self) -> None:
        """Stop the worker processes (a new pool starts on the next call)."""
        self.calls.close()


def math_reward(column: str = "answer", *, workers: int = 2, timeout: Optional[float] = 5.0, pool: str = "process") -> MathVerify:
    """The math-verify reward for the ``column`` answers: ``workers`` processes (or threads), each
    verification limited to ``timeout`` seconds."""
    try:
        import math_verify  # noqa: F401
    except ImportError as e:
        raise ImportError("math rewards need math-verify: pip install 'unified_rl[math]'") from e
    return MathVerify(Concurrent(functools.partial(verify_answer, column=column), name="math_verify", workers=workers, timeout=timeout,
                                 pool=pool), column=column)
