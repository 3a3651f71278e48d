"""Algorithm 1 (DeepSeekMath §4.1.4) for every method, through one loop:

    for iteration in 1..I:
        pi_ref <- pi_theta                                    (reset_reference)
        for step in 1..M:
            rollout = data_source.sample(policy, n)           (offline sources ignore the policy)
            rollout = reward(rollout, rollout.texts)          (outcome, process or a reward model)
            fill old / reference log-probs the coefficient needs (skipped when beta = 0)
            rollout = coefficient.prepare(rollout)            (advantages + weights, no grad)
            repeat mu times: engine.backward -> clip grad norm -> AdamW -> LR schedule
            coefficient.update(rollout)                       (PPO: the value model)
        reward model: continual training on new samples + 10% replay
"""

import contextlib
import copy
import dataclasses
import logging
import os
import time
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from . import threads
from . import distributed
from .distributed import reduce_metrics
from .interrupt import StopAfterStep
from .checkpointer import Checkpointer
from .coefficients import groups_with_spread
from .config import TrainConfig
from .learner import Learner, schedule
from .producer import SourceProducer
from .data.chat import render_rows
from .data.recipes import Setup
from .data.sources import Encoder
from .engine import ExecutionPlan
from .evaluate import Extractor, greedy_accuracy
from .hf import (Reference, add_lora, check_tokenizer, check_vocabulary, ddp, fsdp, gathered, init_process_group, shard, shard_trained, launched_by_torchrun, enable_activation_checkpointing, make_sampler,
                 trainable)
from .methods import Method
from .precision import autocast
from .metric_logger import MetricLogger, RunLogger, rewind
from .protocols import DataSource, RewardFunction, Sampler, check_coefficient, conforms


@contextlib.contextmanager
def seeded(seed: int):
    """A block whose random draws (parameter initialisation) come from ``seed``; the global RNGs (CPU,
    and CUDA where it is in use) are restored afterwards, so the caller's streams are untouched."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        yield


NO_SIGNAL_STEPS = 10  # steps without any reward spread in any group before the Trainer warns


def _groups_with_signal(rollout, scored) -> Optional[float]:
    """Fraction of groups (of two or more scored samples) whose rewards are not all equal; None
    when the batch has no such group (SFT, PPO's single samples)."""
    if rollout.group_ids is None:
        return None
    sizable, spread = groups_with_spread(rollout.rewards, rollout.group_ids, scored)
    return spread / sizable if sizable else None


class Trainer:
    """Trains ``policy`` with ``method`` on ``rows`` (dicts with ``prompt`` and ``completion`` /
    ``answer``; a list, a ``datasets.Dataset`` or any iterable of dicts): the method's data-source recipe is built on these rows with the run's sampler
    (``config.sampler``, or ``sampler=``), unless ``data_source=`` gives a ready one. ``reward``
    scores samples (the method's own if it has one); ``extract`` reads answers for the held-out
    greedy accuracy on ``eval_rows``. Every plug-in is checked against its Protocol here, once."""

    def __init__(self, policy: nn.Module, tokenizer: Any, method: Method, rows: Iterable[dict], config: TrainConfig, *,
                 eval_rows: Optional[Iterable[dict]] = None, reward: Optional[RewardFunction] = None,
                 data_source: Optional[DataSource] = None, sampler: Optional[Sampler] = None, extract: Optional[Extractor] = None,
                 phase: Optional[str] = None, logger: Optional[MetricLogger] = None, adapt_threads: bool = False):
        self.cfg = c = config.check()
        if c.parallel != "none" and launched_by_torchrun():  # before anything is built: a usage error stops every rank
            init_process_group()
        self.world, self.rank = distributed.world_size(), distributed.rank()
        if c.questions_per_step % self.world:
            raise ValueError(f"questions_per_step = {c.questions_per_step} is the global batch and must divide among the "
                             f"{self.world} ranks (each samples whole groups)")
        self.local_questions = c.questions_per_step // self.world
        if self.world > 1 and torch.distributed.get_backend() == "nccl":  # each rank on its own GPU (init_process_group set it)
            policy = policy.to(torch.device("cuda", torch.cuda.current_device()))
        check_tokenizer(tokenizer)
        check_vocabulary(policy, tokenizer)
        rows = render_rows(list(rows), tokenizer)  # a list, a datasets.Dataset or any iterable of dicts; chat rows as text
        check_coefficient(method.coefficient, f"method {method.name!r}: coefficient")
        for field, fixed in method.settings().items():  # one source of truth: a setting given twice must agree
            given = getattr(c, field, None)
            if given is not None and given != fixed:
                raise ValueError(f"TrainConfig.{field} = {given!r}, but method {method.name!r} was built with {field} = {fixed!r}; "
                                 "give it in one place (methods.from_config(config) builds the method from the config)")
        if c.lora_r is not None:  # adapters first: everything below (data, reference, optimizer) sees the LoRA model
            targets = c.lora_targets if c.lora_targets == "all-linear" else [t.strip() for t in c.lora_targets.split(",") if t.strip()]
            with seeded(c.seed):  # the adapters' initialisation comes from the run's seed, not from the caller's RNG
                policy = add_lora(policy, r=c.lora_r, alpha=c.lora_alpha, targets=targets, dropout=c.lora_dropout)
        if c.gradient_checkpointing:
            enable_activation_checkpointing(policy)
        self.policy, self.tokenizer, self.method, self.phase = policy, tokenizer, method, phase or method.name
        self.coefficient = copy.deepcopy(method.coefficient)  # the run's own pieces: a Method can start several runs, sharing no critic
        self.needs = self.coefficient.needs
        self.plan = ExecutionPlan(max_tokens=c.max_tokens, share_prefix=c.share_prefix, precision=c.precision, packed=c.packed)
        self.encoder = Encoder(tokenizer, c.max_prompt_tokens, c.max_new_tokens + 1)
        self.eval_rows = render_rows(list(eval_rows), tokenizer) if eval_rows is not None else None
        if self.eval_rows and extract is None:
            raise ValueError("Trainer: eval_rows were given but no extract= to read a completion's answer (e.g. url.rewards.AfterMarker('####'))")
        self.extract = extract
        self.sampler = sampler or make_sampler(c.sampler, tokenizer, **c.sampler_options())
        conforms(self.sampler, Sampler, "sampler")
        self.reward = reward or method.reward
        if self.reward is not None:
            conforms(self.reward, RewardFunction, "reward")
        elif self.needs & {"rewards", "step_rewards", "scored"}:
            raise ValueError(f"Trainer: method {method.name!r} reads {', '.join(sorted(self.needs & {'rewards', 'step_rewards'}))} "
                             "but no reward function was given (reward=...)")
        setup = Setup(rows, self.encoder, self.sampler, policy, self.reward, seed=c.seed + 1_000_003 * self.rank, max_new_tokens=c.max_new_tokens,
                      temperature=c.temperature)
        self.source = data_source or method.data_source.build(setup)
        conforms(self.source, DataSource, "data source")
        self.reference = Reference(policy) if "ref_logprobs" in self.needs else None
        if self.reference is not None and self.reference.shares_policy and c.iterations > 1 and c.reset_reference:
            raise ValueError("a LoRA policy's reference is its base model (adapters off), which cannot be reset each iteration: "
                             "set reset_reference = false, or iterations = 1")
        if not any(True for _ in trainable(policy)):
            raise ValueError("Trainer: no parameter of the policy requires grad; nothing would be trained")
        with seeded(c.seed + 1):  # a value model the coefficient builds (PPO) starts from the run's seed too
            self.coefficient.attach(policy)
        self.train_model = policy
        if self.world > 1:
            if c.parallel == "ddp":
                self.train_model = ddp(policy)  # gradients summed over ranks; the weights stay self.policy's
            else:  # FSDP2: each decoder layer sharded, then the log-prob root; the reference sharded the same way
                self.train_model = fsdp(policy)
                if self.reference is not None and self.reference.copy is not None:
                    shard(self.reference.copy)
                for model, optimizer in self.coefficient.owned_models().values():  # PPO's value model
                    shard_trained(model, optimizer)
        self.params = [p for _, p in trainable(policy)]  # LoRA: the adapters only; FSDP2: the shards
        self.learner = Learner(policy, self.train_model, self.params, self.coefficient, self.plan, lr=c.lr, weight_decay=c.weight_decay,
                               lr_factor=schedule(c.warmup_steps, c.steps * c.iterations, c.schedule), mu=c.mu, grad_clip=c.grad_clip)
        self.optimizer, self.scheduler = self.learner.optimizer, self.learner.scheduler
        self.producer = SourceProducer(self.source, policy, self.needs, self.plan, c.precision, self.full_weights)
        self.step_count, self.iteration = 0, 0
        self.history: list[dict] = []
        self.flat_steps = 0  # consecutive steps in which every group's rewards were equal
        self.interrupted = False  # set by run() when Ctrl-C stopped it early
        self.adapt_threads = adapt_threads  # fit torch's threads to the free cores each step (changes rounding with the load)
        if adapt_threads:
            threads.fit_threads()  # no more torch threads than the cores this process may use (affinity, cgroup quota)
        config = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
        self.logger = logger or RunLogger(c.out_dir, c.report_to, f"{self.phase}-{c.seed}", config, self.rank)
        conforms(self.logger, MetricLogger, "logger")
        self.checkpointer = Checkpointer(self)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        """One step of Algorithm 1: produce, score, reference log-probs, prepare and mu updates; returns the step's metrics."""
        c = self.cfg
        t0 = time.perf_counter()
        n_threads = threads.adapt_threads() if self.adapt_threads else torch.get_num_threads()  # threads.py
        if self.step_count % c.steps == 0:
            self._begin_iteration()
        rollout = self.producer.produce(self.local_questions)  # sampled (or read), with log pi_old where needed
        produced = self.producer.metrics()
        t_rew = time.perf_counter()
        if self.reward is not None and rollout.rewards is None:  # a source that judges its samples (pairs, dynamic sampling) scored them already
            rollout = self.reward(rollout, rollout.texts)
        t_ref = time.perf_counter()
        if "ref_logprobs" in self.needs and rollout.ref_logprobs is None:
            with self.full_weights() if self.reference.shares_policy else contextlib.nullcontext():  # LoRA: the base is the policy's
                rollout = rollout.replace(ref_logprobs=self.reference.logprobs(rollout, self.plan))
        t_upd = time.perf_counter()
        rollout, stats, norm, aux = self.learner.update(rollout, self.step_count)
        if self.reward is not None:
            self.reward.observe(rollout)
        self.step_count += 1
        t_end = time.perf_counter()
        times = {"time/generate": produced.pop("time/generate"), "time/reward": t_ref - t_rew,
                 "time/logprobs": produced.pop("time/old_logprobs") + (t_upd - t_ref), "time/update": t_end - t_upd}
        m = {"phase": self.phase, "step": self.step_count, "iteration": self.iteration, **stats.metrics, **aux, **produced,
             **(self.reward.metrics() if self.reward is not None else {}), "grad_norm": norm, "lr": self.learner.lr(), **times,
             "tokens_per_s": rollout.num_completion_tokens * c.mu / max(t_end - t0, 1e-9),
             "completion_length": rollout.num_completion_tokens / rollout.batch_size, "threads": n_threads}
        return self._finish_step(m, rollout)

    def _finish_step(self, m: dict[str, Any], rollout) -> dict[str, Any]:
        """The step's reward and entropy summaries, reduced over ranks; evaluation, logging and checkpoint when due."""
        c = self.cfg
        if rollout.entropies is not None and rollout.num_completion_tokens:
            m["entropy/mean"] = float(rollout.entropies[rollout.completion_mask].double().mean())
        if rollout.rewards is not None:  # over scored samples only; an unscored sample is never a 0
            scored = rollout.scored if rollout.scored is not None else torch.ones_like(rollout.rewards, dtype=torch.bool)
            if bool(scored.any()):
                m["reward/mean"] = float(rollout.rewards[scored].double().mean())
            m["reward/unscored"] = float((~scored).sum())
            signal = _groups_with_signal(rollout, scored)
            if signal is not None:
                m["reward/groups_with_signal"] = signal
                self._warn_if_no_signal(signal == 0.0, rollout.rewards[scored])
        m = reduce_metrics(m)  # over every rank (as it is in one process)
        if c.eval_every and self.eval_rows and self.step_count % c.eval_every == 0:
            m["eval/accuracy"] = self.evaluate()
        self.history.append(m)
        self.log_metrics(m)
        if c.log_completions_every and self.step_count % c.log_completions_every == 0 and rollout.texts is not None:
            self.log_completions(rollout)
        if c.checkpoint_every and c.out_dir and self.step_count % c.checkpoint_every == 0:
            self.save(os.path.join(c.out_dir, "checkpoint"))
        return m

    def _warn_if_no_signal(self, flat: bool, rewards) -> None:
        """Say it out loud, once per stretch, when NO_SIGNAL_STEPS steps in a row gave no group a reward spread."""
        self.flat_steps = self.flat_steps + 1 if flat else 0
        if self.flat_steps == NO_SIGNAL_STEPS:
            values = sorted({round(float(r), 6) for r in rewards})[:3]
            logging.getLogger("unified_rl").warning(
                f"step {self.step_count}: for {NO_SIGNAL_STEPS} steps every group's rewards were equal (rewards seen: {values}), "
                "so group-relative advantages are 0 and nothing is learnt; the policy may be too weak for the task "
                "(fine-tune it first, e.g. SFT) or the reward may not discriminate")

    def _begin_iteration(self) -> None:
        if self.iteration > 0 and self.reward is not None:
            metrics = self.reward.end_iteration(self.cfg.reward_replay)
            if metrics:
                self.log_metrics({"phase": self.phase, "step": self.step_count, **metrics})
        if self.reference is not None and self.cfg.reset_reference and self.iteration > 0:
            self.reference.reset()
        self.iteration += 1

    def run(self, progress: bool = True) -> list[dict]:
        """Train until ``steps x iterations`` steps are done (with a progress bar); returns the metrics history.

        With ``out_dir``, the last step is always checkpointed (unless ``checkpoint_every`` is 0), so
        a finished run can be continued with more steps. Ctrl-C finishes the current step, saves a
        checkpoint, sets ``interrupted`` and returns; a second Ctrl-C stops at once (``KeyboardInterrupt``)."""
        total = self.cfg.steps * self.cfg.iterations
        self.interrupted = False
        bar = tqdm(total=total, initial=self.step_count, desc=self.phase, disable=not progress or self.rank > 0,
                   dynamic_ncols=True)
        with StopAfterStep(f"{self.phase} step {self.step_count + 1}") as stop:
            while self.step_count < total:
                stop.what = f"{self.phase} step {self.step_count + 1}"
                m = self.train_step()
                bar.update(1)
                bar.set_postfix({k: f"{m[k]:.3g}" for k in ("reward/mean", "loss", "kl/k3", "eval/accuracy") if k in m})
                if stop.requested:
                    self.interrupted = True
                    break
            bar.close()
            every = self.cfg.checkpoint_every
            if self.cfg.out_dir and (self.interrupted or (every and self.step_count % every)):  # the end is always resumable
                self.save(os.path.join(self.cfg.out_dir, "checkpoint"))
        self.close_reporters()
        return self.history

    def evaluate(self, rows: Optional[Sequence[dict]] = None) -> float:
        """Greedy accuracy on ``rows`` (default: the held-out rows), answers read by ``extract``."""
        if self.extract is None:
            raise ValueError("Trainer.evaluate: no extract= was given to read a completion's answer")
        rows = rows if rows is not None else (self.eval_rows or [])
        with self.full_weights(), autocast(self.policy, self.cfg.precision):
            return greedy_accuracy(self.policy, self.encoder, rows[: self.cfg.eval_size], sampler=self.sampler, extract=self.extract,
                                   max_new_tokens=self.cfg.max_new_tokens)

    def full_weights(self):
        """A block in which the policy holds its full weights: under FSDP2 every rank gathers them
        (a collective: call it on every rank), elsewhere nothing to do. Sampling, evaluation and
        export run inside it."""
        return gathered(self.train_model)

    def log_metrics(self, m: dict) -> None:
        """Send one step's metrics to the run's :class:`~unified_rl.metric_logger.MetricLogger`."""
        self.logger.log(m, int(m.get("step", self.step_count)))

    def log_completions(self, rollout, n: int = 8) -> None:
        """The step's first ``n`` samples (prompt, completion, reward; None if unscored) to the logger."""
        scored = rollout.scored.tolist() if rollout.scored is not None else [True] * rollout.batch_size
        rewards = rollout.rewards.tolist() if rollout.rewards is not None else [None] * rollout.batch_size
        rows = [{"phase": self.phase, "step": self.step_count, "prompt": t.prompt, "completion": t.completion, "reward": rewards[i] if scored[i] else None}
                for i, t in enumerate(rollout.texts[:n])]
        self.logger.completions(rows, self.step_count)

    def close_reporters(self) -> None:
        """Finish the logger's runs (``run`` does this at its end)."""
        self.logger.close()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume bitwise (:class:`~unified_rl.checkpointer.Checkpointer`)."""
        return self.checkpointer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (every part is checked to be there before anything is restored)."""
        self.checkpointer.load_state_dict(state)

    def save(self, folder: str) -> None:
        """Write a checkpoint atomically to ``folder`` (the previous one is kept as ``folder.prev``);
        under torchrun every rank calls it (DCP shards plus each rank's own state)."""
        self.checkpointer.save(folder)

    def resume(self, folder: str) -> None:
        """Load the checkpoint in ``folder`` (verified, with the previous one as fallback) and continue from it.
        The run's ``metrics.jsonl`` keeps this phase's steps up to the checkpoint (steps done after
        it will be done again, so their lines go) and ``history`` starts from them."""
        self.checkpointer.resume(folder)
        kept = rewind(self.cfg.out_dir, self.phase, self.step_count, self.rank)
        if kept is not None:
            self.history = kept
