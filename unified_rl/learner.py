"""The learner: what turns a scored rollout into parameter updates. :class:`Learner` is the
protocol the Trainer calls; :class:`AdamWLearner`, the default, takes the critic's values (PPO),
the coefficient's ``prepare``, ``mu`` engine passes each followed by gradient clipping and an AdamW
step, the learning-rate schedule, and the critic's step. It owns the optimizer, the schedule and
the critic."""

import contextlib
from typing import Any, Callable, ContextManager, Optional, Protocol, runtime_checkable

import torch
from torch import nn

from . import engine
from .config import Optimisation
from .schedules import schedule
from .critic import Critic
from .engine import ExecutionPlan, Stats
from .protocols import GradientCoefficient
from .rollout import Rollout


@runtime_checkable
class Learner(Protocol):
    """Turns a scored rollout into parameter updates (``Trainer(..., learner=lambda trainer: ...)``).
    ``optimizer`` and ``scheduler`` are what a checkpoint stores and restores."""

    optimizer: torch.optim.Optimizer
    scheduler: Any

    def update(self, rollout: Rollout, step: int) -> tuple[Rollout, Stats, float, dict]:
        """Prepare ``rollout`` and update on it; returns the prepared rollout, the last engine
        pass's stats, the gradient norm and any metrics of the learner's own."""

    def lr(self) -> float:
        """The learning rate the next update will use."""


class AdamWLearner:
    """The default :class:`Learner`: updates ``policy`` (run through ``train_model``, its FSDP2/DDP wrapper or itself) on
    ``params`` with AdamW, the schedule and the clipping that ``optim`` sets; with a ``critic``
    (PPO), fills the rollout's values before the coefficient prepares it and trains the critic after
    the policy's updates; ``models``: the distributions terms over the vocabulary read (a teacher),
    each whole inside ``whole(model)`` for the passes (FSDP2: ``hf.gathered``; default: as it is)."""

    def __init__(self, policy: nn.Module, train_model: nn.Module, params: list, coefficient: GradientCoefficient, plan: ExecutionPlan,
                 optim: Optimisation, critic: Optional[Critic] = None, models: Optional[dict[str, nn.Module]] = None,
                 whole: Callable[[nn.Module], ContextManager] = lambda model: contextlib.nullcontext()):
        self.policy, self.train_model, self.params, self.coefficient, self.plan = policy, train_model, params, coefficient, plan
        self.critic, self.models, self.whole = critic, models or {}, whole
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
        with contextlib.ExitStack() as stack:  # the models the pass reads, whole once for all mu updates
            for model in self.models.values():
                stack.enter_context(self.whole(model))
            for _ in range(self.mu):
                self.optimizer.zero_grad(set_to_none=True)
                stats = engine.backward(self.train_model, rollout, self.coefficient, self.plan, self.models)
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip if self.grad_clip else float("inf"))
                if not torch.isfinite(norm):
                    raise FloatingPointError(f"step {step}: gradient norm is {float(norm)}; the update was skipped")
                self.optimizer.step()
        self.scheduler.step()
        return rollout, stats, float(norm), self.critic.update(rollout) if self.critic is not None else {}

    def lr(self) -> float:
        """The learning rate the next update will use."""
        return self.scheduler.get_last_lr()[0]
