"""The learner: what turns a scored rollout into parameter updates -- the coefficient's ``prepare``,
``mu`` engine passes each followed by gradient clipping and an AdamW step, the learning-rate
schedule, and the coefficient's own update (PPO's value model). It owns the optimizer and schedule."""

import math
from typing import Callable, Optional

import torch
from torch import nn

from . import engine
from .config import Optimisation
from .critic import Critic
from .engine import ExecutionPlan, Stats
from .protocols import GradientCoefficient
from .rollout import Rollout


def schedule(warmup_steps: int, total: int, kind: str) -> Callable[[int], float]:
    """The learning-rate factor of step ``step``: linear warm-up over ``warmup_steps``, then
    constant, cosine or linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return factor


class Learner:
    """Updates ``policy`` (run through ``train_model``, its FSDP2/DDP wrapper or itself) on
    ``params`` with AdamW, the schedule and the clipping that ``optim`` sets; with a ``critic``
    (PPO), fills the rollout's values before the coefficient prepares it and trains the critic after
    the policy's updates."""

    def __init__(self, policy: nn.Module, train_model: nn.Module, params: list, coefficient: GradientCoefficient, plan: ExecutionPlan,
                 optim: Optimisation, critic: Optional[Critic] = None):
        self.policy, self.train_model, self.params, self.coefficient, self.plan = policy, train_model, params, coefficient, plan
        self.critic = critic
        self.mu, self.grad_clip = optim.mu, optim.grad_clip
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
        lr_factor = schedule(optim.warmup_steps, optim.steps * optim.iterations, optim.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)

    def update(self, rollout: Rollout, step: int) -> tuple[Rollout, Stats, float, dict]:
        """Prepare ``rollout`` (advantages, weights) and take ``mu`` updates on it; returns the
        prepared rollout, the last pass's stats, its gradient norm and the critic's metrics.
        A non-finite gradient norm stops before the optimizer moves (``FloatingPointError``)."""
        if self.critic is not None:
            rollout = rollout.replace(values=self.critic.values(rollout))
        rollout = self.coefficient.prepare(rollout)
        self.policy.train()
        for _ in range(self.mu):
            self.optimizer.zero_grad(set_to_none=True)
            stats = engine.backward(self.train_model, rollout, self.coefficient, self.plan)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip if self.grad_clip else float("inf"))
            if not torch.isfinite(norm):
                raise FloatingPointError(f"step {step}: gradient norm is {float(norm)}; the update was skipped")
            self.optimizer.step()
        self.scheduler.step()
        return rollout, stats, float(norm), self.critic.update(rollout) if self.critic is not None else {}

    def lr(self) -> float:
        """The learning rate the next update will use."""
        return self.scheduler.get_last_lr()[0]
