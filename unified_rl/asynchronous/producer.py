"""The asynchronous :class:`~unified_rl.producer.RolloutProducer`: a rollout worker process samples
while the learner trains, at most ``staleness`` policy versions behind (K). K = 0 keeps the two in
lockstep (the synchronous loop's samples, bitwise); K >= 1 lets the worker sample batch b + K while
the learner trains on batch b. A sample older than the policy being trained is corrected by the
method's pieces (``corrected`` terms read ``old_logprobs`` / ``sampler_logprobs``): where the chain
holds a correction, pi_old is recomputed by the learner (the proximal policy of decoupled PPO) and
the correction weighs pi_old / pi_behaviour; without one, pi_old is the behaviour policy itself."""

import contextlib
import os
import pickle
import time
from typing import Callable, ContextManager

import torch
from torch import nn

from .. import engine
from ..engine import ExecutionPlan
from ..protocols import DataSource
from ..rollout import Rollout
from ..worker_error import RolloutWorkerError
from .weights import SharedWeights
from .worker import Failed, Produced, WorkerSpec, run


class AsyncProducer:
    """Rollouts from a worker process running ``source`` on a shared copy of ``policy`` (see the
    module docstring). ``timeout_s``: how long the learner waits for a batch before it stops the
    run; ``threads``: the worker's torch threads. Call :meth:`policy_updated` after every update and
    :meth:`close` at the end (the Trainer does both)."""

    def __init__(self, source: DataSource, policy: nn.Module, needs: frozenset, plan: ExecutionPlan, questions: int, *,
                 staleness: int = 1, timeout_s: float = 300.0, threads: int = 1, precision: str = "fp32",
                 full_weights: Callable[[], ContextManager] = contextlib.nullcontext):
        if staleness < 0:
            raise ValueError(f"async staleness must be >= 0 (policy versions a sample may lag), got {staleness}")
        self.source, self.policy, self.needs, self.plan, self.questions = source, policy, needs, plan, questions
        self.staleness, self.timeout_s, self.threads, self.precision, self.full_weights = staleness, timeout_s, threads, precision, full_weights
        self.context = torch.multiprocessing.get_context("spawn")
        self.weights = SharedWeights(policy, self.context)
        self.reader, self.process = None, None
        self.step, self.source_state = 0, source.state_dict()
        self.recompute = "sampler_logprobs" in needs  # a correction weighs pi_old / pi_behaviour: pi_old is the learner's
        self._metrics: dict[str, float] = {}
        self._sync_s = 0.0

    def _start(self) -> None:
        self._publish()
        spec = WorkerSpec(pickle.dumps(self.source), self.source_state, self.questions, self.staleness, self.step, self.plan, self.precision,
                          self.threads, os.getpid())
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=run, args=(spec, self.weights, writer), daemon=True, name="rollout-worker")
        process.start()  # spawn: a script that trains must guard its entry with ``if __name__ == "__main__":``
        writer.close()  # the worker holds the only write end: its death is an end of file here, never a hang
        self.process, self.reader = process, reader

    def produce(self, n: int) -> Rollout:
        """The batch for the learner's current step (see :class:`~unified_rl.producer.RolloutProducer`)."""
        if n != self.questions:
            raise ValueError(f"AsyncProducer: built for {self.questions} questions per batch, asked for {n}")
        if self.process is None:
            self._start()
        t0 = time.perf_counter()
        got = self._next()
        waited = time.perf_counter() - t0
        rollout, lag = got.rollout.to(self.policy_device()), self.step - got.version
        t1 = time.perf_counter()
        with self.full_weights():
            if "old_logprobs" in self.needs and (rollout.old_logprobs is None or (self.recompute and lag > 0)):
                rollout = rollout.replace(old_logprobs=engine.logprobs(self.policy, rollout, self.plan))
            if "entropies" in self.needs and rollout.entropies is None:
                rollout = rollout.replace(entropies=engine.entropies(self.policy, rollout, self.plan))
        self.source_state, self.step = got.source_state, self.step + 1
        self._metrics = {"time/generate": waited, "time/old_logprobs": time.perf_counter() - t1, "time/learner_idle": waited,
                         "time/worker_idle": got.times["idle"], "time/worker_generate": got.times["generate"],
                         "time/weight_sync": self._sync_s, "async/staleness": float(lag),
                         **{f"async/staleness_{k}": float(lag == k) for k in range(self.staleness + 1)}, **behaviour_stats(rollout)}
        return rollout

    def _next(self) -> Produced:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                ready = self.reader.poll(min(1.0, max(deadline - time.monotonic(), 0.01)))
                got = pickle.loads(self.reader.recv_bytes()) if ready else None  # the worker's own bytes
            except (OSError, EOFError):  # the pipe's end: the worker is gone
                self.process.join(timeout=5)
                raise self._died() from None
            if got is None:
                if not self.process.is_alive():
                    raise self._died()
                if time.monotonic() >= deadline:
                    raise RolloutWorkerError(f"the rollout worker (pid {self.process.pid}) sent no batch in async_timeout_s = "
                                             f"{self.timeout_s:g} s (batch {self.step + 1})")
                continue
            if isinstance(got, Failed):
                raise RolloutWorkerError(f"the rollout worker failed at batch {self.step + 1}: {got.message}")
            if got.batch != self.step:
                raise RolloutWorkerError(f"the rollout worker sent batch {got.batch + 1} when the learner needs batch {self.step + 1}")
            return got

    def _died(self) -> RolloutWorkerError:
        return RolloutWorkerError(f"the rollout worker (pid {self.process.pid}) died with exit code {self.process.exitcode} "
                                  f"before batch {self.step + 1}")

    def policy_device(self) -> torch.device:
        """Where the learner's policy lives (rollouts come over on the CPU)."""
        return next(self.policy.parameters()).device

    def policy_updated(self) -> None:
        """The learner finished an update: publish its weights as the next version."""
        self._publish()

    def _publish(self) -> None:
        try:
            with self.full_weights():
                self._sync_s = self.weights.publish(self.policy, self.step, self.timeout_s,
                                                    alive=lambda: self.process is None or self.process.is_alive())
        except TimeoutError as e:
            alive = self.process is not None and self.process.is_alive()
            state = "hangs" if alive else f"died with exit code {self.process.exitcode}" if self.process is not None else "is gone"
            raise RolloutWorkerError(f"the rollout worker {state} holding the weights (after step {self.step}): {e}") from None

    def metrics(self) -> dict[str, float]:
        """The last batch's numbers: staleness (and a flag per value 0..K), the learner's and the
        worker's idle time, generation and weight-sync seconds, and the behaviour importance ratio."""
        return {**self._metrics, **self.source.metrics()}

    def state_dict(self) -> dict:
        """The source's position after the last batch trained on (in-flight batches are regenerated on resume)."""
        return {"source": self.source_state, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a running worker is restarted from there."""
        self.close()
        self.source_state, self.step = state["source"], int(state["step"])
        self.weights.stop.value = 0

    def close(self) -> None:
        """Stop the worker (it is a daemon: it dies with the learner anyway)."""
        if self.process is None:
            return
        self.weights.stop.value = 1  # the worker looks at it at least every second
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.reader.close()
        self.process, self.reader = None, None


def behaviour_stats(rollout: Rollout) -> dict[str, float]:
    """The importance ratio pi_old / pi_behaviour over the output tokens: mean, min, max and the
    effective sample size as a fraction of the tokens, (sum w)^2 / (n sum w^2)."""
    if rollout.old_logprobs is None or rollout.sampler_logprobs is None or not rollout.num_completion_tokens:
        return {}
    m = rollout.completion_mask
    w = torch.exp(rollout.old_logprobs.double()[m] - rollout.sampler_logprobs.double()[m])
    return {"async/ratio_mean": float(w.mean()), "async/ratio_min": float(w.min()), "async/ratio_max": float(w.max()),
            "async/ess": float(w.sum() ** 2 / (len(w) * (w * w).sum()))}
