"""The policy's weights shared between the learner and the rollout worker through torch's own
machinery: a copy of the policy whose tensors live in shared memory (``Module.share_memory``, handed
to the worker process by ``torch.multiprocessing``), a version counter and a condition. The learner
copies its weights in after each update (``publish``); the worker copies them out before it samples
(``load_into``). Nothing is serialised and no protocol of our own carries tensors."""

import copy
import time
from typing import Any

import torch
from torch import nn


class SharedWeights:
    """A shared-memory copy of ``policy`` (made before any wrapper shards it), at version 0.

    ``version`` counts the updates the learner has published: version v holds the weights after v
    updates. ``context`` is a ``torch.multiprocessing`` context (spawn)."""

    def __init__(self, policy: nn.Module, context: Any):
        self.model = copy.deepcopy(policy).requires_grad_(False).share_memory()
        self.version = context.Value("q", 0, lock=False)
        self.changed = context.Condition()
        self.stopped = context.Event()

    def publish(self, policy: nn.Module, version: int) -> float:
        """Copy ``policy``'s parameters and buffers (full tensors: call it where they are whole,
        e.g. inside ``Trainer.full_weights()``) into the shared copy as ``version``; returns the seconds it took."""
        t0 = time.perf_counter()
        with self.changed, torch.no_grad():
            for (name, dst), (_, src) in zip(_tensors(self.model), _tensors(policy)):
                dst.copy_(src.detach().to(dst.device, dst.dtype))
            self.version.value = version
            self.changed.notify_all()
        return time.perf_counter() - t0

    def wait_for(self, version: int, timeout_s: float) -> bool:
        """Block until the published version is at least ``version`` (True) or the run stops / the
        timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.version.value < version and not self.stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return self.version.value >= version

    def load_into(self, model: nn.Module) -> int:
        """Copy the latest published weights into ``model``; returns their version."""
        with self.changed, torch.no_grad():
            for (_, dst), (_, src) in zip(_tensors(model), _tensors(self.model)):
                dst.copy_(src)
            return int(self.version.value)


def _tensors(model: nn.Module) -> list:
    """Parameters then buffers, by name (the two models have the same structure)."""
    return [*model.named_parameters(), *model.named_buffers()]
