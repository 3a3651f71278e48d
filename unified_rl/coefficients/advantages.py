"""Advantage estimators: prepare-time (no grad) pieces that fill ``rollout.advantages``.

Each is a callable ``estimator(rollout) -> rollout`` that fills ``advantages [batch, seq]``
(0 outside completions; GAE also fills ``returns``). ``needs`` names the fields it reads (the
chain checks them); ``check`` looks only at values, e.g. group sizes.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from ._groups import group_index, group_sizes, normalize_in_groups
from .pieces import AdvantageEstimator


def check_groups(rollout: Rollout, piece: str, min_size: int = 2) -> None:
    """Raise if any group has fewer than ``min_size`` samples, naming the group and a sample."""
    sizes = group_sizes(rollout.group_ids)
    if bool((sizes < min_size).any()):
        row = int((sizes < min_size).nonzero()[0, 0])
        raise ValueError(
            f"{piece}: group {int(rollout.group_ids[row])} (sample {row}) has {int(sizes[row])} sample(s); "
            f"group-relative advantages need at least {min_size} per question"
        )


def _per_token(rollout: Rollout, per_seq: Float[Tensor, "batch"]) -> Float[Tensor, "batch seq"]:
    return torch.where(rollout.completion_mask, per_seq[:, None], torch.zeros((), dtype=per_seq.dtype))


def _float_dtype(rollout: Rollout) -> torch.dtype:
    return rollout.rewards.dtype if rollout.rewards is not None else torch.float64


@dataclass(frozen=True)
class Constant(AdvantageEstimator):
    """A_t = value for every output token (SFT: 1)."""

    value: float = 1.0
    dtype: "torch.dtype | None" = None

    needs = frozenset()
    label = "constant()"

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        dtype = self.dtype or _float_dtype(rollout)
        return rollout.completion_mask.to(dtype) * self.value


@dataclass(frozen=True)
class Correct(AdvantageEstimator):
    """A_i = 1[r_i > threshold]: rejection sampling keeps correct outputs (RFT, Online RFT).
    Unscored samples get 0."""

    threshold: float = 0.5

    needs = frozenset({"rewards"})
    label = "correct()"

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        ok = rollout.rewards > self.threshold
        if rollout.scored is not None:
            ok = ok & rollout.scored
        return _per_token(rollout, ok.to(rollout.rewards.dtype))


@dataclass(frozen=True)
class GroupNormalized(AdvantageEstimator):
    """Outcome supervision (DeepSeekMath §4.1.2): A_{i,t} = (r_i - mean(r)) / std(r) over the group.

    Unscored samples are left out of mean and std and get 0; an all-equal group gets exactly 0.
    """

    needs = frozenset({"rewards", "group_ids"})
    label = "group_normalized()"

    def check(self, rollout: Rollout) -> None:
        check_groups(rollout, self.label)

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        valid = rollout.scored if rollout.scored is not None else torch.ones_like(rollout.rewards, dtype=torch.bool)
        return _per_token(rollout, normalize_in_groups(rollout.rewards, rollout.group_ids, valid))


@dataclass(frozen=True)
class LeaveOneOut(AdvantageEstimator):
    """RLOO: A_i = r_i - mean_{j != i} r_j within the group (not in the paper; a composition example).
    Unscored samples are left out of every baseline and get 0; so does a sample with no scored
    partner. Sums are taken in fp64."""

    needs = frozenset({"rewards", "group_ids"})
    label = "leave_one_out()"

    def check(self, rollout: Rollout) -> None:
        check_groups(rollout, self.label)

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        idx, k = group_index(rollout.group_ids)
        valid = rollout.scored if rollout.scored is not None else torch.ones_like(rollout.rewards, dtype=torch.bool)
        r = torch.where(valid, rollout.rewards.to(torch.float64), torch.zeros((), dtype=torch.float64))
        total = torch.zeros(k, dtype=r.dtype, device=r.device).index_add_(0, idx, r)
        others = torch.zeros(k, dtype=r.dtype, device=r.device).index_add_(0, idx, valid.to(r.dtype))[idx] - 1
        adv = torch.where(valid & (others >= 1), r - (total[idx] - r) / others.clamp(min=1), torch.zeros_like(r))
        return _per_token(rollout, adv.to(rollout.rewards.dtype))


@dataclass(frozen=True)
class ProcessNormalized(AdvantageEstimator):
    """Process supervision (§4.1.3): step rewards normalised over all steps of the group,
    r~ = (r - mean(R)) / std(R); then A_{i,t} = sum of r~_i^{index(j)} over steps with index(j) >= t.
    """

    needs = frozenset({"step_rewards", "step_mask", "group_ids"})
    label = "process_normalized()"

    def check(self, rollout: Rollout) -> None:
        check_groups(rollout, self.label)
        stray = rollout.step_mask & ~rollout.completion_mask
        if bool(stray.any()):
            b, t = stray.nonzero()[0].tolist()
            raise ValueError(f"process_normalized(): step_mask marks sample {b}, position {t}, which is not an output token")

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        mask = rollout.step_mask
        groups = rollout.group_ids[:, None].expand_as(mask)[mask]
        valid = torch.ones_like(groups, dtype=torch.bool)
        if rollout.scored is not None:
            valid = rollout.scored[:, None].expand_as(mask)[mask]
        normed = normalize_in_groups(rollout.step_rewards[mask], groups, valid)
        per_step = torch.zeros_like(rollout.step_rewards).masked_scatter(mask, normed)
        # A_t = sum over steps at or after t: a reversed cumulative sum along seq.
        later = per_step.flip(-1).cumsum(-1).flip(-1)
        return torch.where(rollout.completion_mask, later, torch.zeros((), dtype=later.dtype))


def constant(value: float = 1.0) -> Constant:
    """A = ``value`` on every output token (SFT)."""
    return Constant(value)


def correct(threshold: float = 0.5) -> Correct:
    """A = 1[r > threshold] (RFT, Online RFT)."""
    return Correct(threshold)


def group_normalized() -> GroupNormalized:
    """Outcome supervision: the group-normalised reward (GRPO)."""
    return GroupNormalized()


def process_normalized() -> ProcessNormalized:
    """Process supervision: normalised step rewards summed over later steps (GRPO)."""
    return ProcessNormalized()


def leave_one_out() -> LeaveOneOut:
    """RLOO: the reward minus the mean of the rest of the group."""
    return LeaveOneOut()
