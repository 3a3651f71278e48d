"""Advantage estimators: prepare-time (no grad) pieces that fill ``rollout.advantages``.

Each is a callable ``estimator(rollout) -> rollout`` that fills ``advantages [batch, seq]``
(0 outside completions; GAE also fills ``returns``). ``needs`` names the fields it reads (the
chain checks them); ``check`` looks only at values, e.g. group sizes.
"""

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from ._groups import center_in_groups, group_index, group_sizes, normalize_in_groups
from .pieces import AdvantageEstimator
from .terms import KL_ESTIMATORS, kl_estimate, masked

Scale = Literal["group", "batch", "none"]
SCALES: tuple[str, ...] = get_args(Scale)


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

    @property
    def formula(self) -> str:
        return f"{self.value:g}"

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
    @property
    def formula(self) -> str:
        return rf"\mathbb{{1}}[r_i > {self.threshold:g}]"

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        ok = rollout.rewards > self.threshold
        if rollout.scored is not None:
            ok = ok & rollout.scored
        return _per_token(rollout, ok.to(rollout.rewards.dtype))


def _valid(rollout: Rollout) -> Tensor:
    return rollout.scored if rollout.scored is not None else torch.ones_like(rollout.rewards, dtype=torch.bool)


@dataclass(frozen=True)
class GroupNormalized(AdvantageEstimator):
    """Outcome supervision (DeepSeekMath §4.1.2): A_{i,t} = (r_i - mean(r)) / std(r) over the group.

    ``scale`` (TRL's ``scale_rewards``): "group" divides by the group's std (the paper), "batch" by
    the std of the whole batch's rewards, "none" by nothing (Dr. GRPO). Unscored samples are left
    out of means and stds and get 0; an all-equal group gets exactly 0. (TRL divides by std + 1e-4;
    here a group without spread is 0 and no epsilon is added.)
    """

    scale: Scale = "group"
    needs = frozenset({"rewards", "group_ids"})

    @property
    def label(self) -> str:
        return "group_normalized()" if self.scale == "group" else f"group_normalized(scale={self.scale!r})"

    @property
    def formula(self) -> str:
        below = {"group": r"\mathrm{std}_g\, r", "batch": r"\mathrm{std}_{batch}\, r", "none": ""}[self.scale]
        return (r"\frac{r_i - \mathrm{mean}_g\, r}{" + below + "}") if below else r"r_i - \mathrm{mean}_g\, r"

    def check(self, rollout: Rollout) -> None:
        check_groups(rollout, self.label)

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        if self.scale == "group":
            return _per_token(rollout, normalize_in_groups(rollout.rewards, rollout.group_ids, _valid(rollout)))
        return _per_token(rollout, center_in_groups(rollout.rewards, rollout.group_ids, _valid(rollout), self.scale))


@dataclass(frozen=True)
class LeaveOneOut(AdvantageEstimator):
    """RLOO: A_i = r'_i - mean_{j != i} r'_j within the group, with the KL in the reward
    (TRL's RLOO): r'_i = r_i - kl_beta * sum_t D_t, D the k1/k2/k3 estimate from log pi_old and
    log pi_ref. Unscored samples are left out of every baseline and get 0; so does a sample with no
    scored partner. Sums are taken in fp64."""

    kl_beta: float = 0.0
    kl_estimator: str = "k1"

    @property
    def needs(self) -> frozenset:
        return frozenset({"rewards", "group_ids"} | ({"old_logprobs", "ref_logprobs"} if self.kl_beta else set()))

    @property
    def label(self) -> str:
        return "leave_one_out()" if not self.kl_beta else f"leave_one_out(kl_beta={self.kl_beta}, kl_estimator={self.kl_estimator!r})"

    def check(self, rollout: Rollout) -> None:
        check_groups(rollout, self.label)

    @property
    def formula(self) -> str:
        shaped = rf"r'_i = r_i - {self.kl_beta:g}\sum_t {self.kl_estimator}_t" if self.kl_beta else "r'_i = r_i"
        return r"r'_i - \mathrm{mean}_{j \ne i}\, r'_j,\ " + shaped

    def shaped_rewards(self, rollout: Rollout) -> Float[Tensor, "batch"]:
        """r - kl_beta * sum_t D_t (fp64)."""
        r = rollout.rewards.to(torch.float64)
        if not self.kl_beta:
            return r
        d = kl_estimate(rollout.old_logprobs.to(torch.float64), rollout.ref_logprobs.to(torch.float64), self.kl_estimator)
        return r - self.kl_beta * masked(rollout, d).sum(-1)

    def advantages(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        idx, k = group_index(rollout.group_ids)
        valid = _valid(rollout)
        r = torch.where(valid, self.shaped_rewards(rollout), torch.zeros((), dtype=torch.float64))
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
    formula = r"\sum_{index(j) \ge t} \tilde r^{index(j)}_i"

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


def group_normalized(scale: str = "group") -> GroupNormalized:
    """Outcome supervision: the group-normalised reward (GRPO); ``scale`` "batch" or "none" (Dr. GRPO)."""
    if scale not in SCALES:
        raise ValueError(f"group_normalized: scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return GroupNormalized(scale)


def process_normalized() -> ProcessNormalized:
    """Process supervision: normalised step rewards summed over later steps (GRPO)."""
    return ProcessNormalized()


def leave_one_out(kl_beta: float = 0.0, kl_estimator: str = "k1") -> LeaveOneOut:
    """RLOO: the reward (minus ``kl_beta`` times the summed KL estimate) minus the mean of the rest of the group."""
    if not kl_beta >= 0 or kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"leave_one_out: need kl_beta >= 0 and kl_estimator in {KL_ESTIMATORS}, got {kl_beta}, {kl_estimator!r}")
    return LeaveOneOut(kl_beta, kl_estimator)
