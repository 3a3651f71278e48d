"""The rollout worker: a separate process (``torch.multiprocessing``, spawn) that runs the run's own
data source and sampler on its own copy of the policy. Batch b (the one the learner trains on at
step b) waits until the learner has published version b - K, samples with the newest weights there
are, records their version and the behaviour log-probs, and goes down the pipe to the learner with
the source's position after it. Batches travel pickled by value (no shared file descriptor outlives
a worker that dies); errors go down the pipe as one line; a worker whose learner is gone exits."""

import copy
import os
import pickle
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from .. import engine
from ..engine import ExecutionPlan
from ..precision import autocast
from ..protocols import DataSource
from ..rollout import Rollout
from .weights import SharedWeights


@dataclass
class WorkerSpec:
    """What the worker process runs: ``source`` (pickled by value, at ``source_state``) for ``questions``
    questions per batch from batch ``first_batch`` on, at most ``staleness`` versions behind, on ``threads`` threads."""

    source: bytes
    source_state: dict
    questions: int
    staleness: int
    first_batch: int
    plan: ExecutionPlan
    precision: str
    threads: int
    parent: int


@dataclass
class Produced:
    """One batch from the worker: which batch, the version that sampled it, the rollout (on the CPU),
    the source's position after it and the worker's own times."""

    batch: int
    version: int
    rollout: Rollout
    source_state: dict
    times: dict


@dataclass
class Failed:
    """The worker stopped on an error (``message``: one line; ``details``: the traceback)."""

    message: str
    details: str


def run(spec: WorkerSpec, weights: SharedWeights, out: Any) -> None:
    """The worker process's body; ``out``: the write end of a one-way pipe to the learner. A thread
    sends the batches, so sampling goes on while the learner has not read the last one yet."""
    outbox: queue.Queue = queue.Queue()
    sender = threading.Thread(target=_send_all, args=(outbox, out), daemon=True, name="send-batches")
    sender.start()
    try:
        torch.set_num_threads(spec.threads)
        local = copy.deepcopy(weights.model)  # private: the shared copy changes under the learner's hand
        local.eval()
        source: DataSource = pickle.loads(spec.source)  # our own process's bytes, made by the learner
        source.load_state_dict(spec.source_state)
        batch, t0 = spec.first_batch, time.perf_counter()
        while not weights.stopped:
            if not weights.wait_for(batch - spec.staleness, timeout_s=1.0):
                if os.getppid() != spec.parent:
                    return  # the learner is gone
                continue
            t1 = time.perf_counter()
            version = weights.load_into(local)
            t2 = time.perf_counter()
            rollout = _sample(source, local, spec)
            t3 = time.perf_counter()
            rollout = rollout.replace(versions=torch.full((rollout.batch_size,), version, dtype=torch.long)).to("cpu")
            times = {"idle": t1 - t0, "load_weights": t2 - t1, "generate": t3 - t2}
            outbox.put(pickle.dumps(Produced(batch, version, rollout, source.state_dict(), times)))  # by value: no fd outlives the worker
            batch, t0 = batch + 1, time.perf_counter()
    except BaseException as e:  # noqa: BLE001 -- reported to the learner, which stops the run
        outbox.put(pickle.dumps(Failed(f"{type(e).__name__}: {e}", traceback.format_exc())))
    finally:
        outbox.put(None)
        sender.join(timeout=10)


def _send_all(outbox: queue.Queue, out: Any) -> None:
    """Send what ``outbox`` holds down the pipe, in order, until a None (or the learner is gone)."""
    while (item := outbox.get()) is not None:
        try:
            out.send_bytes(item)
        except OSError:
            return


def _sample(source: DataSource, model: torch.nn.Module, spec: WorkerSpec) -> Rollout:
    """One batch from ``source`` with ``model`` and, when the sampler did not record them, the
    behaviour log-probs computed by the model that sampled."""
    with autocast(model, spec.precision):
        rollout = source.sample(model, spec.questions)
    if rollout.sampler_logprobs is None:
        rollout = rollout.replace(sampler_logprobs=engine.logprobs(model, rollout, spec.plan))
    return rollout
