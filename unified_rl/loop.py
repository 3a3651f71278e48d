"""Algorithm 1 (DeepSeekMath §4.1.4) for every method, through one loop:

    for iteration in 1..I:
        pi_ref <- pi_theta                                    (reset_reference)
        for step in 1..M:
            rollout = data_source.sample(policy, n)           (offline sources ignore the policy)
            rollout = reward(rollout, rollout.texts)          (outcome, process or a reward model)
            fill old / reference log-probs the coefficient needs (skipped when beta = 0)
            rollout.values = critic(rollout)                  (PPO: V(s_t) from the run's critic)
            rollout = coefficient.prepare(rollout)            (advantages + weights, no grad)
            repeat mu times: engine.backward -> clip grad norm -> AdamW -> LR schedule
            critic.update(rollout)                            (PPO: one value-model step)
        reward model: continual training on new samples + 10% replay
"""

import contextlib
import copy
import os
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from . import distributed, engine, threads
from .assemble import default_producer, distributions, plug, ready_policy, reference_for, run_reward, seeded, wrapped
from .checkpointer import Checkpointer, TrainerCheckpointer
from .config import TrainConfig
from .data.chat import render_rows
from .data.recipes import Setup
from .data.encoder import Encoder
from .engine import ExecutionPlan
from .evaluate import Extractor, greedy_accuracy
from .hf import gathered, init_process_group, launched_by_torchrun, make_sampler, trainable
from .run_steps import run_steps
from .learner import AdamWLearner, Learner
from .methods import Method, with_sampler_correction
from .metric_logger import MetricLogger, RunLogger
from .precision import autocast
from .producer import RolloutProducer
from .protocols import DataSource, RewardFunction, Sampler, check_coefficient, conforms
from .rollout import Rollout
from .step_metrics import SignalWatch, completion_rows, rollout_summary


class Trainer:
    """Trains ``policy`` with ``method`` on ``rows`` (dicts with ``prompt`` and ``completion`` /
    ``answer``; a list, a ``datasets.Dataset`` or any iterable of dicts): the method's data-source
    recipe is built on these rows with the run's sampler (``config.sampling``, or ``sampler=``),
    unless ``data_source=`` gives a ready one. ``reward`` scores samples (the method's own if it has
    one); ``extract`` reads answers for the held-out greedy accuracy on ``eval_rows``; ``teacher``: the model distillation
    follows. Plug-ins are checked against their Protocols here, once; ``adapt_threads`` refits torch's threads each step.
    ``producer``, ``learner``, ``checkpointer`` (functions of the trainer) replace the loop's default parts."""

    def __init__(self, policy: nn.Module, tokenizer: Any, method: Method, rows: Iterable[dict], config: TrainConfig, *,
                 eval_rows: Optional[Iterable[dict]] = None, reward: Optional[RewardFunction] = None,
                 data_source: Optional[DataSource] = None, sampler: Optional[Sampler] = None, extract: Optional[Extractor] = None,
                 phase: Optional[str] = None, logger: Optional[MetricLogger] = None, adapt_threads: bool = False,
                 producer: Optional[Callable[["Trainer"], RolloutProducer]] = None,
                 learner: Optional[Callable[["Trainer"], Learner]] = None, teacher: Optional[nn.Module] = None,
                 checkpointer: Optional[Callable[["Trainer"], Checkpointer]] = None):
        self.cfg = c = config
        if c.model.parallel != "none" and launched_by_torchrun():  # before anything is built: a usage error stops every rank
            init_process_group()
        self.world, self.rank = distributed.world_size(), distributed.rank()
        if c.optim.questions_per_step % self.world:
            raise ValueError(f"questions_per_step = {c.optim.questions_per_step} is the global batch and must divide among the "
                             f"{self.world} ranks (each samples whole groups)")
        self.local_questions = c.optim.questions_per_step // self.world
        self.policy = policy = ready_policy(policy, tokenizer, c.model, c.run.seed, self.world)
        self.tokenizer, self.phase, self.extract = tokenizer, phase or method.name, extract
        rows = render_rows(list(rows), tokenizer)  # a list, a datasets.Dataset or any iterable of dicts; chat rows as text
        self.eval_rows = render_rows(list(eval_rows), tokenizer) if eval_rows is not None else None
        if self.eval_rows and extract is None:
            raise ValueError("Trainer: eval_rows were given but no extract= to read a completion's answer (e.g. url.rewards.AfterMarker('####'))")
        self.sampler = sampler or make_sampler(c.sampling.sampler, tokenizer, **c.sampling.sampler_options())
        conforms(self.sampler, Sampler, "sampler")
        check_coefficient(method.coefficient, f"method {method.name!r}: coefficient")
        self.method = with_sampler_correction(method, c.sampling.sampler_correction, c.sampling.sampler_correction_max, self.sampler.exact,
                                             stale=bool(c.sampling.async_staleness))
        self.coefficient = copy.deepcopy(self.method.coefficient)  # the run's own pieces: a Method can start several runs
        self.needs = self.coefficient.needs
        self.plan = ExecutionPlan(max_tokens=c.model.max_tokens, share_prefix=c.model.share_prefix, precision=c.model.precision,
                                  packed=c.model.packed)
        self.encoder = Encoder(tokenizer, c.sampling.max_prompt_tokens, c.sampling.max_new_tokens + 1)
        self.reward = run_reward(self.method, reward, self.needs)
        setup = Setup(rows, self.encoder, self.sampler, policy, self.reward, seed=c.run.seed + 1_000_003 * self.rank,
                      max_new_tokens=c.sampling.max_new_tokens, temperature=c.sampling.temperature)
        self.source = data_source or self.method.data_source.build(setup)
        conforms(self.source, DataSource, "data source")
        self.reference = reference_for(policy, self.coefficient, c.optim.iterations, c.optim.reset_reference)
        with seeded(c.run.seed + 1):  # the run's own critic (PPO) starts from the run's seed too
            self.critic = self.method.critic.build(policy) if self.method.critic is not None else None
        self.train_model = wrapped(policy, c.model.parallel, self.world, self.reference, self.critic, teacher)
        self.params = [p for _, p in trainable(policy)]  # LoRA: the adapters only; FSDP2: the shards
        others, self.teacher = distributions(self.coefficient, teacher, self.reference, self.world, c.model.parallel), teacher
        self.learner = plug(learner, self, lambda: AdamWLearner(policy, self.train_model, self.params, self.coefficient, self.plan,
                                                                c.optim, self.critic, others, gathered), Learner, "learner")
        self.optimizer, self.scheduler = self.learner.optimizer, self.learner.scheduler
        self.producer = plug(producer, self, lambda: default_producer(self), RolloutProducer, "producer")
        self.step_count, self.iteration, self.history, self.interrupted = 0, 0, [], False
        self.signal, self.adapt_threads = SignalWatch(), adapt_threads
        self.logger = plug(logger and (lambda _: logger), self, lambda: RunLogger(c.run.out_dir, c.run.report_to, f"{self.phase}-{c.run.seed}",
                                                                                  c.flat(), self.rank), MetricLogger, "logger")
        self.checkpointer = plug(checkpointer, self, lambda: TrainerCheckpointer(self), Checkpointer, "checkpointer")

    def _frozen_passes(self, rollout: Rollout) -> Rollout:
        """The reference's and the teacher's log-probs of the sampled tokens, where the coefficient reads them."""
        if "ref_logprobs" in self.needs and rollout.ref_logprobs is None:
            with self.full_weights() if self.reference.shares_policy else contextlib.nullcontext():  # LoRA: the base is the policy's
                rollout = rollout.replace(ref_logprobs=self.reference.logprobs(rollout, self.plan))
        if "teacher_logprobs" in self.needs and rollout.teacher_logprobs is None:
            with gathered(self.teacher):  # FSDP2: sharded like the reference
                rollout = rollout.replace(teacher_logprobs=engine.logprobs(self.teacher, rollout, self.plan))
        return rollout

    def train_step(self) -> dict[str, Any]:
        """One step of Algorithm 1: produce, score, reference log-probs, prepare and mu updates; returns the step's metrics."""
        t0 = time.perf_counter()
        n_threads = threads.adapt_threads() if self.adapt_threads else torch.get_num_threads()  # threads.py
        if self.step_count % self.cfg.optim.steps == 0:
            self._begin_iteration()
        rollout = self.producer.produce(self.local_questions)  # sampled (or read), with log pi_old where needed
        produced = self.producer.metrics()
        t_rew = time.perf_counter()
        if self.reward is not None and rollout.rewards is None:  # a source that judges its samples (pairs, dynamic sampling) scored them already
            rollout = self.reward(rollout, rollout.texts)
        t_ref = time.perf_counter()
        rollout = self._frozen_passes(rollout)
        t_upd = time.perf_counter()
        rollout, stats, norm, aux = self.learner.update(rollout, self.step_count)
        if hasattr(self.producer, "policy_updated"):  # a producer that samples beside the learner gets the new weights
            self.producer.policy_updated()
        if self.reward is not None:
            self.reward.observe(rollout)
        self.step_count, t_end = self.step_count + 1, time.perf_counter()
        times = {"time/generate": produced.pop("time/generate"), "time/reward": t_ref - t_rew,
                 "time/logprobs": produced.pop("time/old_logprobs") + (t_upd - t_ref), "time/update": t_end - t_upd}
        m = {"phase": self.phase, "step": self.step_count, "iteration": self.iteration, **stats.metrics, **aux, **produced,
             **(self.reward.metrics() if self.reward is not None else {}), "grad_norm": norm, "lr": self.learner.lr(), **times,
             "tokens_per_s": rollout.num_completion_tokens * self.cfg.optim.mu / max(t_end - t0, 1e-9),
             "completion_length": rollout.num_completion_tokens / rollout.batch_size, "threads": n_threads,
             **rollout_summary(rollout, self.signal, self.step_count)}
        return self._finish_step(distributed.reduce_metrics(m), rollout)  # reduced over every rank (as it is in one process)

    def _finish_step(self, m: dict[str, Any], rollout) -> dict[str, Any]:
        """Evaluation, logging, completions and checkpoint, each when due."""
        r, n = self.cfg.run, self.step_count
        if r.eval_every and self.eval_rows and n % r.eval_every == 0:
            m["eval/accuracy"] = self.evaluate()
        self.history.append(m)
        self.logger.log(m, n)
        if r.log_completions_every and n % r.log_completions_every == 0 and rollout.texts is not None:
            self.logger.completions(completion_rows(rollout, self.phase, n), n)
        if r.checkpoint_every and r.out_dir and n % r.checkpoint_every == 0:
            self.save(os.path.join(r.out_dir, "checkpoint"))
        return m

    def _begin_iteration(self) -> None:
        if self.iteration > 0 and self.reward is not None:
            metrics = self.reward.end_iteration(self.cfg.optim.reward_replay)
            if metrics:
                self.logger.log({"phase": self.phase, "step": self.step_count, **metrics}, self.step_count)
        if self.reference is not None and self.cfg.optim.reset_reference and self.iteration > 0:
            self.reference.reset()
        self.iteration += 1

    def run(self, progress: bool = True) -> list[dict]:
        """Train until ``steps x iterations`` steps are done (with a progress bar); returns the metrics history.

        With ``out_dir``, the last step is always checkpointed (unless ``checkpoint_every`` is 0), so
        a finished run can be continued with more steps. Ctrl-C finishes the current step, saves a
        checkpoint, sets ``interrupted`` and returns; a second Ctrl-C stops at once (``KeyboardInterrupt``)."""
        return run_steps(self, progress)

    def evaluate(self, rows: Optional[Sequence[dict]] = None) -> float:
        """Greedy accuracy on ``rows`` (default: the held-out rows), answers read by ``extract``."""
        if self.extract is None:
            raise ValueError("Trainer.evaluate: no extract= was given to read a completion's answer")
        rows = rows if rows is not None else (self.eval_rows or [])
        with self.full_weights(), autocast(self.policy, self.cfg.model.precision):
            return greedy_accuracy(self.policy, self.encoder, rows[: self.cfg.run.eval_size], sampler=self.sampler, extract=self.extract,
                                   max_new_tokens=self.cfg.sampling.max_new_tokens)

    def full_weights(self):
        """A block in which the policy holds its full weights (FSDP2: gathered, a collective on every rank)."""
        return gathered(self.train_model)

    def save(self, folder: str) -> None:
        """Write a checkpoint atomically to ``folder`` (the previous one kept as ``folder.prev``; under torchrun on every rank)."""
        self.checkpointer.save(folder)

    def resume(self, folder: str) -> None:
        """Continue from the checkpoint in ``folder`` (the default checks it: :class:`~unified_rl.checkpointer.TrainerCheckpointer`)."""
        self.checkpointer.resume(folder)
