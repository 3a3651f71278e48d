"""Reward functions that take time (a verifier, a sandbox, a remote judge): called once per sample,
``workers`` calls at a time, each with its own timeout, the values returned in order.

``pool="thread"`` suits calls that wait (I/O, a remote service); ``pool="process"`` suits Python
that computes (it is not held back by the GIL) and is the one whose timeouts can stop runaway code:
each call runs on its worker's main thread under ``signal.setitimer``, and a worker that does not
answer the alarm is replaced. A thread that times out cannot be stopped; it is abandoned, and its
result ignored. A call that times out gives ``None``: the sample is unscored (left out of group
baselines, counted as ``reward/timeouts``), never a silent 0. An exception names the function and
the sample.
"""

import logging
import multiprocessing
import pickle
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..rollout import Sample
from ..protocols import RewardFunction
from ..rollout import Rollout
from .combine import _name, scored, trl_arguments

POOLS = ("thread", "process")
_GRACE = 5.0  # seconds a process worker gets past its alarm before it is replaced


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def _warm(fn: Callable) -> None:
    """In a new worker: call ``fn`` on an empty batch, so its imports happen before any timed call."""
    try:
        fn([], [])
    except BaseException:  # an empty batch may well be refused; the imports are done by then
        pass


def _timed_call(fn: Callable, args: tuple, kwargs: dict, timeout: Optional[float]) -> tuple[str, Any]:
    """In a worker process: ``fn(*args, **kwargs)`` under an interval timer -> ("ok", value),
    ("timeout", None) or ("error", repr of the exception)."""
    if timeout:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return "ok", fn(*args, **kwargs)
    except _Alarm:
        return "timeout", None
    except BaseException as e:  # reported in the parent with the function's name and the sample (sys.exit too)
        return "error", repr(e)
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)


@dataclass
class Concurrent(RewardFunction):
    """``fn(prompts, completions, **columns)`` (TRL's convention) called on one sample at a time,
    ``workers`` at once in a thread or process pool, each call limited to ``timeout`` seconds (None:
    no limit). Values come back in sample order; ``None`` (and a timeout) marks a sample unscored;
    the values are checked as :class:`~unified_rl.rewards.FromCallable` checks them."""

    fn: Callable[..., Sequence[Optional[float]]]
    name: Optional[str] = None
    workers: int = 4
    timeout: Optional[float] = 30.0
    pool: str = "thread"
    _timeouts: int = field(default=0, init=False, repr=False)
    late: list = field(default_factory=list, init=False, repr=False)  # samples of the last batch that timed out
    _processes: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"Concurrent: pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"Concurrent: workers must be a positive integer, got {self.workers!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"Concurrent: timeout must be > 0 seconds or None, got {self.timeout!r}")
        if self.pool == "process":
            try:
                pickle.dumps(self.fn)
            except Exception as e:
                raise ValueError(f"Concurrent: pool='process' sends {_name(self.fn)!r} to worker processes, so it must be a "
                                 f"module-level function (picklable): {e}") from None

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        return scored(rollout, texts, self.values(texts), self.name or _name(self.fn))

    def values(self, texts: Sequence[Sample]) -> list:
        """The function's value for each sample, in order (``None`` where it timed out: see :attr:`late`)."""
        calls = []
        for s in texts:
            prompts, completions, columns = trl_arguments([s])
            calls.append(((prompts, completions), columns))
        outcomes = self._run_threads(calls) if self.pool == "thread" else self._run_processes(calls)
        name, values, late = self.name or _name(self.fn), [], []
        for i, (status, value) in enumerate(outcomes):
            if status == "error":
                raise RuntimeError(f"reward function {name!r} raised on sample {i} (prompt {texts[i].prompt!r:.60}): {value}")
            if status == "timeout":
                late.append(i)
                values.append(None)
                continue
            if not isinstance(value, (list, tuple)) or len(value) != 1:
                raise ValueError(f"reward function {name!r} returned {value!r:.60} for sample {i}; expected a list of one value")
            values.append(value[0])
        self.late, self._timeouts = late, len(late)
        if late:
            logging.getLogger("unified_rl").warning(f"reward function {name!r}: {len(late)} call(s) took over {self.timeout} s "
                                                    f"(samples {late[:8]}); those samples are unscored")
        return values

    def _run_threads(self, calls: list) -> list[tuple[str, Any]]:
        """Each call in its own daemon thread, at most ``workers`` running; a call past its timeout
        is abandoned (its slot goes to the next call; its result, if it ever comes, is ignored)."""
        results: dict[int, tuple[str, Any]] = {}
        ready = threading.Condition()

        def run(i: int) -> None:
            args, kwargs = calls[i]
            try:
                result = ("ok", self.fn(*args, **kwargs))
            except BaseException as e:  # sys.exit in a reward function is an error of that sample, not a silent timeout
                result = ("error", repr(e))
            with ready:
                results[i] = result
                ready.notify()

        out: dict[int, tuple[str, Any]] = {}
        running: dict[int, float] = {}  # call -> when it started
        next_call = 0
        with ready:
            while len(out) < len(calls):
                while next_call < len(calls) and len(running) < self.workers:
                    running[next_call] = time.monotonic()
                    threading.Thread(target=run, args=(next_call,), daemon=True, name=f"reward-{next_call}").start()
                    next_call += 1
                wait = None if not self.timeout else max(0.0, min(running.values()) + self.timeout - time.monotonic())
                ready.wait_for(lambda: any(i in results for i in running), timeout=wait)
                now = time.monotonic()
                for i in list(running):
                    if i in results:
                        out[i] = results[i]
                    elif self.timeout and now - running[i] >= self.timeout:
                        out[i] = ("timeout", None)
                    else:
                        continue
                    del running[i]
        return [out[i] for i in range(len(calls))]

    def _pool(self):
        """The worker processes, started and warmed up (the function's imports done in each) before
        any call is timed: start-up never counts against a sample's timeout."""
        if self._processes is None:
            self._processes = multiprocessing.get_context("spawn").Pool(self.workers)
            self._processes.map(_warm, [self.fn] * self.workers, chunksize=1)
        return self._processes

    def _run_processes(self, calls: list) -> list[tuple[str, Any]]:
        """Every call in the pool; a worker deaf to its alarm (stuck in C code) costs only its own
        sample: the pool is replaced and the calls it had not finished are sent again."""
        out: dict[int, tuple[str, Any]] = {}
        pending = list(range(len(calls)))
        while pending:
            jobs = {i: self._pool().apply_async(_timed_call, (self.fn, *calls[i], self.timeout)) for i in pending}
            stuck = None
            for n, i in enumerate(pending):
                try:  # the calls ahead of it in the queue may take their full time first
                    out[i] = jobs[i].get(None if self.timeout is None else self.timeout * (n // self.workers + 1) + _GRACE)
                except multiprocessing.TimeoutError:
                    stuck = i
                    break
            if stuck is None:
                break
            out[stuck] = ("timeout", None)
            for i in pending:  # keep what finished before the pool goes
                if i not in out and jobs[i].ready():
                    out[i] = jobs[i].get()
            self.close()
            pending = [i for i in pending if i not in out]
        return [out[i] for i in range(len(calls))]

    def metrics(self) -> dict[str, float]:
        """``reward/timeouts``: calls of the last batch that ran out of time."""
        return {"reward/timeouts": float(self._timeouts)}

    def close(self) -> None:
        """Stop the worker processes (a new pool starts on the next call)."""
        if self._processes is not None:
            self._processes.terminate()
            self._processes.join()
            self._processes = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the pool may be half torn down already
            pass
