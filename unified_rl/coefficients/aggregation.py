"""Aggregation weights w[b, t]: how per-token terms are summed into one objective.

Computed once by ``prepare`` from the **whole** batch (so micro-batches sum to the full-batch
gradient exactly). Weights are fp64 (cheap, [batch, seq]); the engine casts them to the
log-prob dtype. Empty completions get weight 0: a defined zero contribution.
"""

from dataclasses import dataclass
from typing import Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from ..distributed import global_sum
from ..rollout import Rollout, RolloutField
from ._groups import group_index


class Aggregation(Protocol):
    """Weights w[b, t] from the whole batch; ``needs``: the Rollout fields it reads beyond the masks."""

    needs: frozenset[RolloutField] = frozenset()
    formula: str = "w"  # w[b, t] in LaTeX (docs/paradigm.md's table)

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        ...


def _zero_safe_inverse(x: Tensor) -> Tensor:
    return torch.where(x > 0, 1.0 / x.clamp(min=1e-300), torch.zeros_like(x))


@dataclass(frozen=True)
class SequenceMean(Aggregation):
    """The paper's aggregation: (1/B) sum_i (1/|o_i|) sum_t  ->  w = 1 / (B |o_i|)."""

    formula = r"\frac{1}{B\,\lvert o_i\rvert}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        lengths = rollout.completion_lengths.to(torch.float64)
        per_seq = _zero_safe_inverse(lengths) / global_sum(rollout.batch_size)  # B of the whole batch, over all ranks
        return rollout.completion_mask * per_seq[:, None]


@dataclass(frozen=True)
class TokenMean(Aggregation):
    """Mean over all output tokens of the batch (DAPO-style): w = 1 / sum_i |o_i|."""

    formula = r"\frac{1}{\sum_j \lvert o_j\rvert}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        total = float(global_sum(rollout.num_completion_tokens))
        return rollout.completion_mask.to(torch.float64) * (1.0 / total if total else 0.0)


@dataclass(frozen=True)
class ConstantWeight(Aggregation):
    """w = value for every output token (e.g. Dr. GRPO's 1 / (B * L_max))."""

    value: float

    @property
    def formula(self) -> str:
        return f"{self.value:g}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        return rollout.completion_mask.to(torch.float64) * self.value


@dataclass(frozen=True)
class GroupMean(Aggregation):
    """Mean over questions (groups) of the sum over the group's sequences of their token mean
    (length_normalized) or token sum: w = 1 / (Q |o_i|) or 1 / Q. DPO's aggregation: one term
    per pair."""

    length_normalized: bool = True
    needs = frozenset({"group_ids"})

    @property
    def formula(self) -> str:
        return r"\frac{1}{Q\,\lvert o_i\rvert}" if self.length_normalized else r"\frac{1}{Q}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        if rollout.group_ids is None:
            raise ValueError("group_mean() needs Rollout.group_ids, which is None")
        _, n_groups = group_index(rollout.group_ids)
        n_groups = global_sum(n_groups)  # groups never span ranks: the counts add up
        per_seq = torch.full((rollout.batch_size,), 1.0 / n_groups, dtype=torch.float64, device=rollout.input_ids.device)
        if self.length_normalized:
            per_seq = per_seq * _zero_safe_inverse(rollout.completion_lengths.to(torch.float64))
        return rollout.completion_mask * per_seq[:, None]


@dataclass(frozen=True)
class SequenceSum(Aggregation):
    """Sum over each sequence's tokens, mean over sequences (TRL's ``luspo``): w = 1 / B."""

    formula = r"\frac{1}{B}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        return rollout.completion_mask.to(torch.float64) / global_sum(rollout.batch_size)


@dataclass(frozen=True)
class MaxLengthMean(Aggregation):
    """Dr. GRPO: every token weighs the same whatever its sequence's length, w = 1 / (B * L_max)."""

    max_completion_length: int

    @property
    def formula(self) -> str:
        return rf"\frac{{1}}{{B \cdot {self.max_completion_length}}}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        longest = int(rollout.completion_lengths.max()) if rollout.batch_size else 0
        if longest > self.max_completion_length:
            row = int(rollout.completion_lengths.argmax())
            raise ValueError(f"max_length_mean({self.max_completion_length}): sample {row} has {longest} output tokens, "
                             "over max_completion_length (it must be the sampler's max_new_tokens or more)")
        return rollout.completion_mask.to(torch.float64) / (global_sum(rollout.batch_size) * self.max_completion_length)


@dataclass(frozen=True)
class MaskTruncated(Aggregation):
    """``inner``'s weights with truncated completions (cut at max_new_tokens, no eos) given weight 0
    (DAPO's overlong filtering, TRL's ``mask_truncated_completions``): normalisers count only the
    completions that ended. Advantages still use every sample's reward."""

    inner: Aggregation

    @property
    def needs(self) -> frozenset:
        return frozenset(self.inner.needs) | {"truncated"}

    @property
    def formula(self) -> str:
        return self.inner.formula + r"\ \text{(0 if truncated; sums over ended } o\text{)}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        return self.inner(rollout.replace(completion_mask=rollout.completion_mask & ~rollout.truncated[:, None]))


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


def sequence_sum() -> SequenceSum:
    """Sum over tokens, mean over sequences, w = 1 / B (TRL's ``luspo``)."""
    return SequenceSum()


def max_length_mean(max_completion_length: int) -> MaxLengthMean:
    """Dr. GRPO's w = 1 / (B * L_max), with L_max the sampler's ``max_new_tokens``."""
    if not isinstance(max_completion_length, int) or max_completion_length < 1:
        raise ValueError(f"max_length_mean: max_completion_length must be a positive integer, got {max_completion_length!r}")
    return MaxLengthMean(max_completion_length)


def mask_truncated(inner: Aggregation) -> MaskTruncated:
    """``inner`` with truncated completions weighted 0 (DAPO's overlong filtering)."""
    return MaskTruncated(inner)
