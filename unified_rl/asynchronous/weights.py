"""The policy's weights shared between the learner and the rollout worker through torch's own
machinery: a copy of the policy whose tensors live in shared memory (``Module.share_memory``, handed
to the worker process by ``torch.multiprocessing``), a version counter and a lock. The learner
copies its weights in after each update (``publish``); the worker copies them out before it samples
(``load_into``). Nothing is serialised and no protocol of our own carries tensors.

Either side may die at any moment, so nothing here can block for good: the lock is taken with a
timeout (a holder that died never releases it), the version and the stop flag are plain shared
integers the worker polls (no condition variable, whose ``notify`` waits for sleepers that may be dead)."""

import contextlib
import copy
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

POLL_S = 0.002  # how often a waiting worker looks at the version


class SharedWeights:
    """A shared-memory copy of ``policy`` (made before any wrapper shards it), at version 0.

    ``version`` counts the updates the learner has published: version v holds the weights after v
    updates. ``context`` is a ``torch.multiprocessing`` context (spawn)."""

    def __init__(self, policy: nn.Module, context: Any):
        # requires_grad stays as the policy's: CPU kernels differ by an ulp for weights without it, and
        # the worker must compute exactly as the learner would (K = 0 is the synchronous run, bitwise)
        self.model = copy.deepcopy(policy).share_memory()
        self.version = context.Value("q", 0, lock=False)
        self.stop = context.Value("b", 0, lock=False)
        self.lock = context.Lock()

    @property
    def stopped(self) -> bool:
        """The learner asked the worker to stop."""
        return bool(self.stop.value)

    def publish(self, policy: nn.Module, version: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> float:
        """Copy ``policy``'s parameters and buffers (full tensors: call it where they are whole,
        e.g. inside ``Trainer.full_weights()``) into the shared copy as ``version``; returns the
        seconds it took. A ``TimeoutError`` when the worker holds the lock longer than ``timeout_s``
        or is no longer ``alive()`` (a worker killed while it held the lock never releases it)."""
        t0 = time.perf_counter()
        with self.locked(timeout_s, alive), torch.no_grad():
            for (_, dst), (_, src) in zip(_tensors(self.model), _tensors(policy)):
                dst.copy_(src.detach().to(dst.device, dst.dtype))
            self.version.value = version
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def locked(self, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> Iterator[None]:
        """The lock, or a ``TimeoutError`` after ``timeout_s`` or once the other side is not ``alive()``."""
        deadline = time.monotonic() + timeout_s
        while not self.lock.acquire(timeout=min(0.5, max(deadline - time.monotonic(), 0.01))):
            if time.monotonic() >= deadline or not alive():
                raise TimeoutError(f"the shared weights' lock was not free ({'its holder died' if not alive() else f'{timeout_s:g} s'})")
        try:
            yield
        finally:
            self.lock.release()

    def wait_for(self, version: int, timeout_s: float) -> bool:
        """Wait until the published version is at least ``version`` (True) or the run stops / the
        timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self.version.value < version and not self.stopped and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return self.version.value >= version

    def load_into(self, model: nn.Module, timeout_s: float = 600.0) -> int:
        """Copy the latest published weights into ``model``; returns their version."""
        with self.locked(timeout_s), torch.no_grad():
            for (_, dst), (_, src) in zip(_tensors(model), _tensors(self.model)):
                dst.copy_(src)
            return int(self.version.value)


def _tensors(model: nn.Module) -> list:
    """Parameters then buffers, by name (the two models have the same structure)."""
    return [*model.named_parameters(), *model.named_buffers()]
