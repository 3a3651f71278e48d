"""torch.distributed for transformers policies: DDP through a module forward, gradients summed.

Each rank holds whole groups of the batch; the coefficient's ``prepare`` makes every weight a
union-batch weight (``unified_rl.distributed``). The gradient of the union batch is then the *sum*
of the ranks' gradients, so the wrapper all-reduces with a sum (DDP's own hook averages). Log-probs
run inside :class:`LogprobModule`'s ``forward`` -- the trunk and the chunked head -- so DDP's hooks
see every forward; micro-batches before a rank's last run under ``no_sync``, so each rank
all-reduces once per backward whatever its micro-batch count.
"""

import contextlib
import datetime
import os
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..batching import micro_batch_views
from ..lm_head import DEFAULT_CHUNK_BYTES
from ..protocols import ModelAdapter
from ..rollout import Rollout
from .logprobs import completion_logprobs

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when torchrun's environment says this process is one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(backend: Optional[str] = None, timeout_s: float = 600.0) -> None:
    """Join the job torchrun started (once): gloo on CPU, nccl when CUDA is there, with a collective
    timeout so a rank that dies stops the others instead of hanging them."""
    if dist.is_initialized():
        return
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise RuntimeError(f"torch.distributed: no {', '.join(missing)} in the environment; start the job with "
                           "torchrun --nproc_per_node=N (or set them as torchrun does)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("torch.distributed: backend nccl needs CUDA devices; on CPU use gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


class LogprobModule(nn.Module):
    """A transformers causal LM whose ``forward`` returns completion log-probs (the trunk and the
    chunked head): the module a distributed wrapper wraps, so its hooks see every forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                completion_mask: Bool[Tensor, "batch seq"], temperature: float = 1.0,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Float[Tensor, "batch seq"]:
        """log pi(o_t) at completion positions, 0 elsewhere (as ``completion_logprobs``)."""
        return completion_logprobs(self.model, input_ids, attention_mask, completion_mask, temperature=temperature,
                                   chunk_bytes=chunk_bytes, share_prefix=False)


def _sum_hook(state, bucket):
    """All-reduce a gradient bucket with a sum: each rank's loss carries union-batch weights."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])


def ddp(model: nn.Module) -> DistributedDataParallel:
    """``model`` (a transformers model, LoRA or not) for training on every rank of the job: its
    parameters are broadcast from rank 0, and its gradients summed across ranks."""
    if not dist.is_initialized():
        raise RuntimeError("ddp: torch.distributed is not initialised (init_process_group first)")
    device = next(model.parameters()).device
    wrapped = DistributedDataParallel(LogprobModule(model), device_ids=[device] if device.type == "cuda" else None)
    wrapped.register_comm_hook(None, _sum_hook)
    return wrapped


class DistributedAdapter(ModelAdapter):
    """Runs a :func:`ddp`-wrapped policy: each micro-batch through the wrapper's forward, all but
    the rank's last under ``no_sync`` (gradients are all-reduced once per backward)."""

    def accepts(self, model: nn.Module) -> bool:
        """True for :func:`ddp`'s wrapper."""
        return isinstance(model, DistributedDataParallel) and isinstance(model.module, LogprobModule)

    def passes(self, model: nn.Module, rollout: Rollout, plan, keep_groups: bool
               ) -> Iterator[tuple[Int[Tensor, " rows"], int, int, Rollout, Float[Tensor, "rows cols"]]]:
        """See :class:`~unified_rl.protocols.ModelAdapter`."""
        views = [v for v in micro_batch_views(rollout, plan.max_tokens, keep_groups) if v[3].num_completion_tokens]
        if not views and torch.is_grad_enabled():
            raise RuntimeError(f"rank {dist.get_rank()}: no completion tokens in this rank's batch, so it has no backward to join "
                               "the others' gradient all-reduce")
        for k, (idx, lo, hi, mb) in enumerate(views):
            last = k == len(views) - 1
            with contextlib.nullcontext() if last or not torch.is_grad_enabled() else model.no_sync():
                logp = model(mb.input_ids, mb.attention_mask, mb.completion_mask, temperature=rollout.temperature,
                             chunk_bytes=plan.chunk_bytes)
            yield idx, lo, hi, mb, logp
