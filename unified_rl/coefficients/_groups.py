"""Segment statistics over arbitrary ``group_ids`` (groups need not be contiguous or equal-sized)."""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..distributed import global_mean_std


def group_index(group_ids: Int[Tensor, "n"]) -> tuple[Int[Tensor, "n"], int]:
    """Dense 0..K-1 index of each element's group, and K."""
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, int(uniq.numel())


def _spread(values: Float[Tensor, "n"], idx: Int[Tensor, "n"], k: int, valid: Bool[Tensor, "n"]) -> tuple[Tensor, Tensor]:
    """(valid count, signal) per group: signal is True where a group has two or more valid values
    and they are not all equal (compared by max and min, so rounding noise never counts)."""
    count = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, idx, valid.to(values.dtype))
    big = torch.finfo(values.dtype).max
    hi = torch.full((k,), -big, dtype=values.dtype, device=values.device).scatter_reduce_(0, idx, torch.where(valid, values, -big), "amax")
    lo = torch.full((k,), big, dtype=values.dtype, device=values.device).scatter_reduce_(0, idx, torch.where(valid, values, big), "amin")
    return count, (count >= 2) & (hi > lo)


def groups_with_spread(values: Float[Tensor, "n"], groups: Int[Tensor, "n"], valid: Bool[Tensor, "n"]) -> tuple[int, int]:
    """(groups with two or more valid values, how many of them are not all equal): the groups a
    group-relative advantage can learn from, as :func:`normalize_in_groups` decides."""
    idx, k = group_index(groups)
    count, signal = _spread(values.to(torch.float64), idx, k, valid)
    return int((count >= 2).sum()), int(signal.sum())


def normalize_in_groups(
    values: Float[Tensor, "n"], groups: Int[Tensor, "n"], valid: Bool[Tensor, "n"]
) -> Float[Tensor, "n"]:
    """(v - mean_g) / std_g over the valid elements of each group; 0 where invalid.

    std is the sample standard deviation (ddof = 1). A group whose valid values are all equal,
    or that has fewer than two valid values, carries no learning signal: its result is exactly 0
    (never NaN, and never rounding noise amplified by a tiny std). Means and variances are taken
    in fp64 whatever the input dtype (rewards like 1e20 overflow an fp32 variance); the result
    is cast back to the input dtype.
    """
    dtype = values.dtype
    values = values.to(torch.float64)
    idx, k = group_index(groups)
    v = torch.where(valid, values, torch.zeros_like(values))
    count, signal = _spread(values, idx, k, valid)
    mean = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, idx, v) / count.clamp(min=1)
    centered = torch.where(valid, values - mean[idx], torch.zeros_like(values))
    var = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, idx, centered**2) / (count - 1).clamp(min=1)
    std = torch.where(signal, var.sqrt(), torch.ones_like(var))
    out = centered / std[idx]
    return torch.where(valid & signal[idx], out, torch.zeros_like(out)).to(dtype)


def center_in_groups(
    values: Float[Tensor, "n"], groups: Int[Tensor, "n"], valid: Bool[Tensor, "n"], scale: str = "none"
) -> Float[Tensor, "n"]:
    """v - mean_g over the valid elements of each group, divided by nothing (``scale="none"``, Dr. GRPO),
    or by the sample std over all valid elements of the batch (``"batch"``). Exactly 0 where
    invalid and in groups without spread (as :func:`normalize_in_groups`); fp64 inside."""
    dtype = values.dtype
    values = values.to(torch.float64)
    idx, k = group_index(groups)
    count, signal = _spread(values, idx, k, valid)
    v = torch.where(valid, values, torch.zeros_like(values))
    mean = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, idx, v) / count.clamp(min=1)
    out = torch.where(valid & signal[idx], values - mean[idx], torch.zeros_like(values))
    if scale == "batch":  # the std of every rank's valid rewards (a collective: every rank calls it)
        _, std, _ = global_mean_std(values[valid])
        out = out / std if std > 0 else torch.zeros_like(out)
    return out.to(dtype)


def group_sizes(group_ids: Int[Tensor, "n"]) -> Int[Tensor, "n"]:
    """Size of each element's group."""
    idx, k = group_index(group_ids)
    return torch.bincount(idx, minlength=k)[idx]
