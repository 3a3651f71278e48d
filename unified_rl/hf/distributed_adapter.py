"""The engine's adapter for a policy inside torchrun's wrappers (:func:`~unified_rl.hf.distributed.fsdp`,
:func:`~unified_rl.hf.distributed.ddp`): every pass through the wrapper's forward, so its hooks see
the trunk and the head, with the same number of forwards on every rank under FSDP2."""

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from ..batching import micro_batch_views
from ..distributed import global_max
from ..protocols import ModelAdapter
from ..rollout import Rollout
from .distributed import LogprobModule


class DistributedAdapter(ModelAdapter):
    """Runs a :func:`fsdp`- or :func:`ddp`-wrapped policy: each micro-batch through the wrapper's
    forward, all but the rank's last without gradient sync (one reduction per backward). Under
    FSDP2 every rank runs as many forwards as the busiest one (extra passes have loss 0); under DDP a
    rank with no completion tokens runs one such pass, so it still joins the reduction."""

    def accepts(self, model: nn.Module) -> bool:
        """True for :func:`fsdp`'s and :func:`ddp`'s wrappers."""
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        return isinstance(inner, LogprobModule) and (inner is not model or isinstance(model, FSDPModule))

    def passes(self, model: nn.Module, rollout: Rollout, plan, keep_groups: bool, reduce: bool = True
               ) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Float[Tensor, "rows cols"]]]:
        """See :class:`~unified_rl.protocols.ModelAdapter`; ``reduce`` False: no gradient reduction at the
        end either (the pass over the vocabulary that follows reduces the sum of both)."""
        options = {"chunk_bytes": plan.chunk_bytes, "packed": plan.packed}
        yield from self._forwards(model, rollout, plan, keep_groups, reduce, lambda view: options, lambda logp: logp.sum() * 0.0)

    def head_states(self, model: nn.Module, mb: Rollout) -> tuple[Tensor, Any, int]:
        """Not through a wrapper: the pass over the vocabulary runs in :meth:`vocabulary_passes`."""
        raise ValueError("a distributed wrapper's head states are read inside its forward: use vocabulary_passes")

    def vocabulary_passes(self, model: nn.Module, rollout: Rollout, plan, micro: Callable) -> Iterator[tuple[Rollout, Any]]:
        """(view, ``micro(states, head, vocab, idx, lo, hi, view)``) per micro-batch, ``micro`` run inside
        the wrapper's forward so that its hooks see the trunk and the head (FSDP2 gathers them, DDP
        reduces their gradients); the same extra passes and gradient-sync rule as :meth:`passes`."""
        def options(view: Optional[tuple]) -> dict:
            if view is None:  # an extra pass: the trunk and the head in the graph, nothing added to the gradient
                return {"vocabulary": lambda states, head, vocab: (states.sum() + head(states[:1]).sum()) * 0.0}
            idx, lo, hi, mb = view
            return {"vocabulary": lambda states, head, vocab: micro(states, head, vocab, idx, lo, hi, mb)}

        for _, _, _, mb, out in self._forwards(model, rollout, plan, False, True, options, lambda loss: loss):
            yield mb, out

    def _forwards(self, model: nn.Module, rollout: Rollout, plan, keep_groups: bool, reduce: bool, options: Callable,
                  zero: Callable) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Any]]:
        """(idx, lo, hi, view, the wrapper's output) per micro-batch, ``options(view)`` the forward's own
        arguments (``options(None)`` for an extra pass, whose ``zero(output)`` is back-propagated): the
        extra passes and the gradient-sync rule of the class docstring; ``reduce`` False: none at the end."""
        views = list(micro_batch_views(rollout, plan.max_tokens, keep_groups))
        grad = torch.is_grad_enabled()
        is_fsdp = isinstance(model, FSDPModule)
        if is_fsdp:
            padding = global_max(len(views)) - len(views)
        else:
            padding = 1 if grad and not views else 0
        blank = views[0][3] if views else rollout.select([0])
        total = padding + len(views)

        def forward(mb: Rollout, k: int, extra: dict) -> Any:
            last = k == total - 1 and reduce
            if is_fsdp:
                model.set_requires_gradient_sync(last or not grad)
                sync = contextlib.nullcontext()
            else:
                sync = contextlib.nullcontext() if last or not grad else model.no_sync()
            with sync:
                return model(mb.input_ids, mb.attention_mask, mb.completion_mask, temperature=rollout.temperature, **extra)

        for k in range(padding):  # the same collectives as the other ranks, nothing added to the gradient
            out = forward(blank, k, options(None))
            if grad:
                zero(out).backward()
        for k, view in enumerate(views, start=padding):
            yield (*view, forward(view[3], k, options(view)))
