"""Aggregation weights w[b, t]: how per-token terms are summed into one objective.

Computed once by ``prepare`` from the **whole** batch (so micro-batches sum to the full-batch
gradient exactly). Weights are fp64 (cheap, [batch, seq]); the engine casts them to the
log-prob dtype. Empty completions get weight 0: a defined zero contribution.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from ._groups import group_index


def _zero_safe_inverse(x: Tensor) -> Tensor:
    return torch.where(x > 0, 1.0 / x.clamp(min=1e-300), torch.zeros_like(x))


@dataclass(frozen=True)
class SequenceMean:
    """The paper's aggregation: (1/B) sum_i (1/|o_i|) sum_t  ->  w = 1 / (B |o_i|)."""

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        lengths = rollout.completion_lengths.to(torch.float64)
        per_seq = _zero_safe_inverse(lengths) / rollout.batch_size
        return rollout.completion_mask * per_seq[:, None]


@dataclass(frozen=True)
class TokenMean:
    """Mean over all output tokens of the batch (DAPO-style): w = 1 / sum_i |o_i|."""

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        total = float(rollout.num_completion_tokens)
        return rollout.completion_mask.to(torch.float64) * (1.0 / total if total else 0.0)


@dataclass(frozen=True)
class ConstantWeight:
    """w = value for every output token (e.g. Dr. GRPO's 1 / (B * L_max))."""

    value: float

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        return rollout.completion_mask.to(torch.float64) * self.value


@dataclass(frozen=True)
class GroupMean:
    """Mean over questions (groups) of the sum over the group's sequences of their token mean
    (length_normalized) or token sum: w = 1 / (Q |o_i|) or 1 / Q. DPO's aggregation: one term
    per pair."""

    length_normalized: bool = True

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        if rollout.group_ids is None:
            raise ValueError("group_mean() needs Rollout.group_ids, which is None")
        _, n_groups = group_index(rollout.group_ids)
        per_seq = torch.full((rollout.batch_size,), 1.0 / n_groups, dtype=torch.float64, device=rollout.input_ids.device)
        if self.length_normalized:
            per_seq = per_seq * _zero_safe_inverse(rollout.completion_lengths.to(torch.float64))
        return rollout.completion_mask * per_seq[:, None]


def sequence_mean() -> SequenceMean:
    """The paper's aggregation, w = 1 / (B |o_i|)."""
    return SequenceMean()


def token_mean() -> TokenMean:
    """Mean over all output tokens, w = 1 / sum |o_i|."""
    return TokenMean()


def constant_weight(value: float) -> ConstantWeight:
    """w = ``value`` on every output token."""
    return ConstantWeight(value)


def group_mean(length_normalized: bool = True) -> GroupMean:
    """One term per question (group): w = 1 / (Q |o_i|), or 1 / Q without length normalisation."""
    return GroupMean(length_normalized)
