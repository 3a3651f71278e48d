"""torch.distributed for transformers policies: FSDP2 (``fully_shard``) or DDP through a module
forward, gradients summed.

Each rank holds whole groups of the batch; the coefficient's ``prepare`` makes every weight a
union-batch weight (``unified_rl.distributed``). The gradient of the union batch is then the *sum*
of the ranks' gradients, so both wrappers reduce with a sum (their own default averages). Log-probs
run inside :class:`LogprobModule`'s ``forward`` -- the trunk and the chunked head -- so the
wrapper's hooks see every forward; micro-batches before a rank's last run without gradient sync,
so each rank reduces once per backward whatever its micro-batch count. FSDP2 all-gathers each
layer's weights in every forward, so every rank runs the same number of forwards: a rank with fewer
micro-batches adds passes whose loss is 0 (they contribute nothing to the gradient). The engine's
pass over the vocabulary (distillation, the exact entropy, the full KL) runs inside the same forward
(``LogprobModule(..., vocabulary=...)``); the adapter is :mod:`~unified_rl.hf.distributed_adapter`'s.

Outside the backward -- sampling, pi_old and pi_ref log-probs, evaluation, export -- a sharded
model runs inside :func:`gathered`: every layer's full weights are gathered once, the model is an
ordinary module until the block ends, then it is sharded again.
"""

import contextlib
import datetime
import gc
import os
import sys
import threading
import weakref
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from jaxtyping import Bool, Int
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from ..rollout import Rollout
from .logprobs import TransformersAdapter, completion_logprobs
from .lora import unwrap

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


_HANDED_OUT: "weakref.WeakSet[DistributedDataParallel]" = weakref.WeakSet()  # torn down by leave_process_group


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
        raise ValueError(f"torch.distributed: no {', '.join(missing)} in the environment; start the job with "
                           "torchrun --nproc_per_node=N (or set them as torchrun does)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("torch.distributed: backend nccl needs CUDA devices; on CPU use gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


def leave_process_group(timeout_s: float = 60.0) -> None:
    """End this process's part of the job (every rank, after its last collective): tear down the
    DDP wrappers :func:`ddp` handed out, then destroy the process group. Without it, gloo's worker
    threads can still hold the last collective's work when the interpreter shuts down, and the rank
    dies with SIGABRT ("terminate called without an active exception") after it has finished; and a
    DDP wrapper still alive when the group goes can hang the exit (its reducer's destructor joins a
    gloo thread that waits for the GIL). The teardown has ``timeout_s``: a rank that cannot leave in
    that time says so in one line and exits with status 1 instead of hanging. Not called on an
    exception: other ranks may be waiting in a collective, and torchrun stops them. A wrapper is
    unusable afterwards."""
    watchdog = threading.Timer(timeout_s, _cannot_leave, (timeout_s,))
    watchdog.daemon = True
    watchdog.start()
    try:
        for wrapped in list(_HANDED_OUT):
            for name in ("logger", "reducer"):  # the C++ objects that hold the process group
                if hasattr(wrapped, name):
                    delattr(wrapped, name)
        _HANDED_OUT.clear()
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        watchdog.cancel()


def _cannot_leave(timeout_s: float) -> None:
    """The teardown's watchdog: one line, then the rank ends (a hang would hold the job for ever)."""
    sys.stderr.write(f"unified_rl: rank {os.environ.get('RANK', '0')}: leaving the process group did not finish in "
                     f"{timeout_s:g} s; exiting with status 1\n")
    sys.stderr.flush()
    os._exit(1)


def exit_rank(status: int) -> None:
    """End a rank of a torchrun job now, with ``status``: leave the process group, flush the standard
    streams and ``os._exit``, skipping interpreter finalisation (whose destruction of objects that
    still hold a gloo process group can abort a finished rank). A no-op outside torchrun."""
    if not launched_by_torchrun():
        return
    leave_process_group()  # (it collects the garbage that still holds the group)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class LogprobModule(nn.Module):
    """A transformers causal LM whose ``forward`` returns completion log-probs (the trunk and the
    chunked head): the module a distributed wrapper wraps, so its hooks see every forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Int[Tensor, "batch seq"], attention_mask: Bool[Tensor, "batch seq"],
                completion_mask: Bool[Tensor, "batch seq"], temperature: float = 1.0,
                chunk_bytes: Optional[int] = None, packed: bool = False, vocabulary: Optional[Callable] = None) -> Any:
        """log pi(o_t) at completion positions, 0 elsewhere (as ``completion_logprobs``); with
        ``vocabulary``, what ``vocabulary(states, head, vocab)`` returns on the head states at the
        output positions (the engine's pass over the vocabulary, run inside the wrapper's forward)."""
        if vocabulary is not None:
            return vocabulary(*TransformersAdapter().head_states(self.model, Rollout(input_ids, attention_mask, completion_mask)))
        return completion_logprobs(self.model, input_ids, attention_mask, completion_mask, temperature=temperature,
                                   chunk_bytes=chunk_bytes, share_prefix=False, packed=packed)


def _sum_hook(state, bucket):
    """All-reduce a gradient bucket with a sum: each rank's loss carries union-batch weights."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])


def ddp(model: nn.Module) -> DistributedDataParallel:
    """``model`` (a transformers model, LoRA or not) for training on every rank of the job: its
    parameters are broadcast from rank 0, and its gradients summed across ranks."""
    if not dist.is_initialized():
        raise RuntimeError("ddp: torch.distributed is not initialised (init_process_group first)")
    device = next(model.parameters()).device
    # buffers (rotary frequencies) are the same on every rank: no broadcast per forward, which
    # would pair ranks' forwards one to one although their micro-batch counts differ
    wrapped = DistributedDataParallel(LogprobModule(model), device_ids=[device] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    wrapped.register_comm_hook(None, _sum_hook)
    _HANDED_OUT.add(wrapped)
    return wrapped


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (the classes its ``_no_split_modules`` names):
    the units FSDP2 shards and gathers one at a time."""
    names = {n for m in [unwrap(model), *model.modules()] for n in (getattr(m, "_no_split_modules", None) or [])}
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"fsdp: {type(unwrap(model)).__name__} names no decoder layer class (_no_split_modules), so it "
                         "cannot be sharded layer by layer; use parallel = \"ddp\"")
    return layers


def shard(model: nn.Module, root: Optional[nn.Module] = None) -> nn.Module:
    """FSDP2 over ``model``: ``fully_shard`` each decoder layer, then ``root`` (default: the model
    itself), gradients summed over ranks. Returns ``root``."""
    if not dist.is_initialized():
        raise RuntimeError("fsdp: torch.distributed is not initialised (init_process_group first)")
    root = model if root is None else root
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=True)
    fully_shard(root, reshard_after_forward=False)
    for m in root.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # a sum: each rank's loss carries union-batch weights
            m.set_force_sum_reduction_for_comms(True)  # as a plain SUM (gloo has no pre-multiplied sum)
    # Decide the root now (FSDP2 would on the first forward): sampling runs the layers without it.
    root._get_fsdp_state()._lazy_init()
    return root


def fsdp(model: nn.Module) -> nn.Module:
    """``model`` (a transformers model, LoRA or not) sharded over the ranks of the job with FSDP2:
    each decoder layer, then a :class:`LogprobModule` root, gradients summed across ranks. The
    model's own parameters become shards (DTensors); use it whole inside :func:`gathered`."""
    return shard(model, LogprobModule(model))


def shard_trained(model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
    """:func:`shard` a model that ``optimizer`` (not stepped yet) trains -- PPO's value model -- and
    point the optimizer at the shards that replace its parameters (in the same order)."""
    if optimizer.state:
        raise ValueError("shard_trained: the optimizer has taken steps already; shard the model before training it")
    before = list(model.parameters())
    shard(model)
    after = dict(zip(map(id, before), model.parameters(), strict=True))
    for group in optimizer.param_groups:
        group["params"] = [after[id(p)] for p in group["params"]]
    return model


def sharded(model: nn.Module) -> bool:
    """True when ``model`` holds FSDP2 modules."""
    return any(isinstance(m, FSDPModule) for m in model.modules())


def full_state(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict with whole tensors on the CPU: under FSDP2 all-gathered (a collective:
    call it on every rank; rank 0 receives it, the others an empty dict), else its own."""
    if not sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Inside the block, an FSDP2-sharded ``model`` holds every layer's full weights (all-gathered
    once, on every rank: it is a collective) and runs as an ordinary module -- for sampling,
    log-probs without grad, evaluation and export. Re-sharded at the end. Nested blocks and
    unsharded models: nothing to do."""
    mods = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not mods or getattr(model, "_gathered", False):
        yield
        return
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    model._gathered = True
    try:
        yield
    finally:
        model._gathered = False
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(m is not mods[0], recurse=False)
