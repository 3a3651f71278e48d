"""What a step's rollout says about the run: reward and entropy summaries (over scored samples
only: an unscored sample is never a 0), the share of groups that carry a learning signal with a
warning when none has for a while, and the rows of a completions table."""

import logging
from typing import Any, Optional

import torch

from .coefficients import groups_with_spread
from .rollout import Rollout

NO_SIGNAL_STEPS = 10  # steps without any reward spread in any group before the run warns


def groups_with_signal(rollout: Rollout, scored: torch.Tensor) -> Optional[float]:
    """Fraction of groups (of two or more scored samples) whose rewards are not all equal; None
    when the batch has no such group (SFT, PPO's single samples)."""
    if rollout.group_ids is None:
        return None
    sizable, spread = groups_with_spread(rollout.rewards, rollout.group_ids, scored)
    return spread / sizable if sizable else None


class SignalWatch:
    """Says it out loud, once per stretch, when NO_SIGNAL_STEPS steps in a row gave no group a reward
    spread (group-relative advantages are then 0 and nothing is learnt)."""

    def __init__(self) -> None:
        self.flat_steps = 0  # consecutive steps in which every group's rewards were equal

    def see(self, step: int, flat: bool, rewards: torch.Tensor) -> None:
        """Step ``step`` gave no group a spread (``flat``) or some; ``rewards``: its scored rewards."""
        self.flat_steps = self.flat_steps + 1 if flat else 0
        if self.flat_steps == NO_SIGNAL_STEPS:
            values = sorted({round(float(r), 6) for r in rewards})[:3]
            logging.getLogger("unified_rl").warning(
                f"step {step}: for {NO_SIGNAL_STEPS} steps every group's rewards were equal (rewards seen: {values}), "
                "so group-relative advantages are 0 and nothing is learnt; the policy may be too weak for the task "
                "(fine-tune it first, e.g. SFT) or the reward may not discriminate")


def rollout_summary(rollout: Rollout, watch: SignalWatch, step: int) -> dict[str, float]:
    """``entropy/mean`` over completion tokens; ``reward/mean`` over scored samples, ``reward/unscored``
    and ``reward/groups_with_signal`` (``watch`` warns after a stretch without any)."""
    m: dict[str, float] = {}
    if rollout.entropies is not None and rollout.num_completion_tokens:
        m["entropy/mean"] = float(rollout.entropies[rollout.completion_mask].double().mean())
    if rollout.rewards is None:
        return m
    scored = rollout.scored if rollout.scored is not None else torch.ones_like(rollout.rewards, dtype=torch.bool)
    if bool(scored.any()):
        m["reward/mean"] = float(rollout.rewards[scored].double().mean())
    m["reward/unscored"] = float((~scored).sum())
    signal = groups_with_signal(rollout, scored)
    if signal is not None:
        m["reward/groups_with_signal"] = signal
        watch.see(step, signal == 0.0, rollout.rewards[scored])
    return m


def completion_rows(rollout: Rollout, phase: str, step: int, n: int = 8) -> list[dict[str, Any]]:
    """The first ``n`` samples as table rows: prompt, completion and reward (None if unscored)."""
    scored = rollout.scored.tolist() if rollout.scored is not None else [True] * rollout.batch_size
    rewards = rollout.rewards.tolist() if rollout.rewards is not None else [None] * rollout.batch_size
    return [{"phase": phase, "step": step, "prompt": t.prompt, "completion": t.completion, "reward": rewards[i] if scored[i] else None}
            for i, t in enumerate(rollout.texts[:n])]
