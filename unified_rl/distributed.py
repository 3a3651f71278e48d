"""Batch-wide statistics over every rank of a ``torch.distributed`` job (one process: the local ones).

A coefficient's ``prepare`` computes its weights from the whole batch -- 1/B, 1/sum|o|, batch-level
whitening, a top-entropy threshold. Under ``torchrun`` each rank holds part of the batch, so every
such statistic goes through these functions, which all-reduce counts and sums across ranks before
any backward: the weights on N ranks are those of the union batch, whatever the micro-batch split.
Groups never span ranks, so per-group statistics stay local.

Every rank must make the same calls in the same order (they are collectives); in one process, or
when ``torch.distributed`` is not initialised, each returns its input's own statistic unchanged.
"""

from typing import Union

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor

Number = Union[int, float]


def world_size() -> int:
    """Ranks in the job (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _device() -> torch.device:
    """Where collectives run: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(values: Tensor, op) -> Tensor:
    out = values.detach().to(_device(), torch.float64).clone()
    dist.all_reduce(out, op=op)
    return out.to(values.device)


def global_sum(x: Union[Tensor, Number]) -> Union[Tensor, Number]:
    """Sum of ``x`` (a number, or a tensor element-wise) over all ranks, as a number / float64 tensor."""
    if world_size() == 1:
        return x
    if isinstance(x, Tensor):
        return _reduce(x, dist.ReduceOp.SUM)
    total = float(_reduce(torch.tensor([x], dtype=torch.float64), dist.ReduceOp.SUM)[0])
    return int(round(total)) if isinstance(x, int) else total


def global_max(n: int) -> int:
    """The largest ``n`` over all ranks (e.g. micro-batch counts, so every rank runs as many passes)."""
    if world_size() == 1:
        return n
    return int(_reduce(torch.tensor([n], dtype=torch.float64), dist.ReduceOp.MAX)[0])


def global_values(values: Tensor) -> Tensor:
    """The 1-d ``values`` of every rank, concatenated in rank order (e.g. for a batch-wide quantile)."""
    if world_size() == 1:
        return values
    dev = _device()
    n = torch.tensor([values.numel()], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=dev)
    padded[: values.numel()] = values.detach().to(dev)
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).to(values.device)


def global_objects(items: list) -> list:
    """The lists ``items`` of every rank, concatenated in rank order (plain Python objects, sent
    between this job's own processes; one process: ``items``)."""
    if world_size() == 1:
        return items
    every: list = [None] * world_size()
    dist.all_gather_object(every, list(items))
    return [x for part in every for x in part]


def sum_gradients(params) -> None:
    """Each parameter's ``.grad`` summed over the ranks, in place: for a model that every rank holds
    whole and trains with union-batch weights (PPO's value model under DDP). Sharded parameters
    (DTensors: FSDP2 has reduced their gradients already) are left as they are. One process: nothing."""
    if world_size() == 1:
        return
    for p in params:
        if isinstance(p, DTensor):
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(_reduce(p.grad, dist.ReduceOp.SUM))


def global_mean_std(values: Tensor, unbiased: bool = True) -> tuple[float, float, int]:
    """(mean, std, count) of the 1-d ``values`` of all ranks, in fp64 (std with ``ddof = 1`` when
    ``unbiased``; 0 for fewer than two values). One process: torch's own ``mean`` / ``std``."""
    v = values.to(torch.float64)
    if world_size() == 1:
        n = v.numel()
        if n == 0:
            return 0.0, 0.0, 0
        return float(v.mean()), (float(v.std(correction=1 if unbiased else 0)) if n >= 2 or not unbiased else 0.0), n
    n = int(global_sum(v.numel()))
    if n == 0:
        return 0.0, 0.0, 0
    mean = float(global_sum(float(v.sum()))) / n
    squares = float(global_sum(float(((v - mean) ** 2).sum())))
    denom = n - 1 if unbiased else n
    return mean, ((squares / denom) ** 0.5 if denom > 0 else 0.0), n


# Metrics that count things add up over ranks; the others (means, fractions, norms) are averaged.
SUMMED_METRICS = ("loss", "tokens", "reward/unscored", "reward/timeouts", "reward/unverifiable")


def reduce_metrics(metrics: dict) -> dict:
    """One step's metrics of every rank as one dict: counts summed, other numbers averaged over the
    ranks that report them, the rest (phase, step) from rank 0. Rank-local keys are allowed."""
    if world_size() == 1:
        return metrics
    every: list = [None] * world_size()
    dist.all_gather_object(every, metrics)  # this job's own processes, not a file: plain objects
    out = dict(every[0])
    for key in {k for m in every for k in m}:
        values = [m[key] for m in every if key in m]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and key not in ("step", "iteration"):
            out[key] = sum(values) if key in SUMMED_METRICS else sum(values) / len(values)
        elif key not in out:
            out[key] = values[0]
    return out
