"""Building a run's parts before the first step: the policy made ready (its device under torchrun,
LoRA adapters, activation checkpointing), the plug-ins checked against their protocols, and the
model the passes run through (FSDP2 or DDP across ranks, the policy itself in one process)."""

import contextlib
from typing import Any, Callable, Optional

import torch
from torch import nn

from .config import ModelSetup
from .hf import Reference, add_lora, check_tokenizer, check_vocabulary, ddp, enable_activation_checkpointing, fsdp, shard, shard_trained, trainable
from .methods import Method
from .coefficients.vocabulary import reads_of
from .critic import Critic
from .protocols import RewardFunction, conforms


def plug(factory: Optional[Callable[[Any], Any]], trainer: Any, default: Callable[[], Any], protocol: type, where: str) -> Any:
    """The loop part ``factory(trainer)`` builds (``default()`` when there is no factory), checked
    against its ``protocol`` once, here."""
    part = factory(trainer) if factory else default()
    conforms(part, protocol, where)
    return part


@contextlib.contextmanager
def seeded(seed: int):
    """A block whose random draws (parameter initialisation) come from ``seed``; the global RNGs (CPU,
    and CUDA where it is in use) are restored afterwards, so the caller's streams are untouched."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        yield


def ready_policy(policy: nn.Module, tokenizer: Any, setup: ModelSetup, seed: int, world: int) -> nn.Module:
    """``policy`` on its rank's GPU (NCCL), checked against ``tokenizer``, with LoRA adapters
    (initialised from ``seed``, not the caller's RNG) and activation checkpointing as ``setup`` asks."""
    if world > 1 and torch.distributed.get_backend() == "nccl":  # each rank on its own GPU (init_process_group set it)
        policy = policy.to(torch.device("cuda", torch.cuda.current_device()))
    check_tokenizer(tokenizer)
    check_vocabulary(policy, tokenizer)
    if setup.lora_r is not None:  # adapters first: everything after (data, reference, optimizer) sees the LoRA model
        with seeded(seed):
            policy = add_lora(policy, r=setup.lora_r, alpha=setup.lora_alpha, targets=setup.lora_modules(), dropout=setup.lora_dropout)
    if setup.gradient_checkpointing:
        enable_activation_checkpointing(policy)
    if not any(True for _ in trainable(policy)):
        raise ValueError("Trainer: no parameter of the policy requires grad; nothing would be trained")
    return policy


def run_reward(method: Method, reward: Optional[RewardFunction], needs: frozenset) -> Optional[RewardFunction]:
    """The run's reward (``reward``, else the method's own), checked; a method whose coefficient
    reads rewards cannot run without one."""
    reward = reward or method.reward
    if reward is not None:
        conforms(reward, RewardFunction, "reward")
    elif needs & {"rewards", "step_rewards", "scored"}:
        raise ValueError(f"Trainer: method {method.name!r} reads {', '.join(sorted(needs & {'rewards', 'step_rewards'}))} "
                         "but no reward function was given (reward=...)")
    return reward


def reference_for(policy: nn.Module, coefficient: Any, iterations: int, reset_reference: bool) -> Optional[Reference]:
    """pi_ref where the coefficient reads ``ref_logprobs`` or the reference's distribution: a frozen
    copy, or a LoRA policy's base model."""
    if "ref_logprobs" not in coefficient.needs and "reference" not in reads_of(coefficient.vocabulary):
        return None
    reference = Reference(policy)
    if reference.shares_policy and iterations > 1 and reset_reference:
        raise ValueError("a LoRA policy's reference is its base model (adapters off), which cannot be reset each iteration: "
                         "set reset_reference = false, or iterations = 1")
    return reference


def distributions(coefficient: Any, teacher: Optional[nn.Module], reference: Optional[Reference], world: int,
                  parallel: str = "none") -> dict[str, nn.Module]:
    """The models whose distributions the engine's pass over the vocabulary reads (``teacher``,
    ``reference``), checked before anything trains: a missing teacher or an unsupported set-up is
    a one-line error. Under FSDP2 the teacher and the reference are sharded and gathered for the pass."""
    reads = reads_of(coefficient.vocabulary)
    if "reference" in reads and world > 1 and parallel != "ddp" and reference.shares_policy:  # auto and fsdp shard the policy
        raise ValueError("kl_full with a LoRA policy reads its base model, which FSDP2 shards with the policy; "
                         "train it with --parallel ddp (or use the sampled kl k1/k2/k3)")
    if ("teacher" in reads or "teacher_logprobs" in coefficient.needs) and teacher is None:
        raise ValueError("this method distils from a teacher: pass teacher= to the Trainer (the command line: --teacher PATH)")
    out = {}
    if "teacher" in reads:
        out["teacher"] = teacher  # run without grad and in eval mode by the pass; the caller's model is left as it is
    if "reference" in reads:
        out["reference"] = reference.distribution_model  # a LoRA policy's: its base model (adapters off)
    return out


def wrapped(policy: nn.Module, parallel: str, world: int, reference: Optional[Reference], critic: Optional[Critic],
            teacher: Optional[nn.Module] = None) -> nn.Module:
    """The model the training passes run through: DDP (gradients summed over ranks, the weights stay
    the policy's) or FSDP2 (each decoder layer sharded, then the log-prob root; the reference, the
    teacher and the critic's value model sharded the same way); the policy itself in one process."""
    if world == 1:
        return policy
    if parallel == "ddp":
        return ddp(policy)
    model = fsdp(policy)
    for frozen in (reference.copy if reference is not None else None, teacher):
        if frozen is not None:
            shard(frozen)  # whole again inside gathered(): its passes and the pass over the vocabulary
    if critic is not None:  # PPO's value model
        shard_trained(critic.model, critic.optimizer)
    return model


def default_producer(trainer: Any) -> Any:
    """The loop's default :class:`~unified_rl.producer.RolloutProducer`: the data source run in the
    learner's process, or with ``async_staleness`` set, a rollout worker process (one per rank; not
    under FSDP2, whose weights are sharded: DDP there)."""
    from .asynchronous import AsyncProducer
    from .hf import sharded
    from .producer import SourceProducer

    c, t = trainer.cfg, trainer
    if c.sampling.async_staleness is None:
        return SourceProducer(t.source, t.policy, t.needs, t.plan, c.model.precision, t.full_weights)
    if not t.method.samples_online():
        raise ValueError(f"async_staleness = {c.sampling.async_staleness}: method {t.method.name!r} does not sample from the "
                         "policy, so there is nothing to overlap with training; leave async_staleness null")
    if sharded(t.train_model):
        raise ValueError("async_staleness under FSDP2: the rollout worker needs whole weights; use --parallel ddp")
    return AsyncProducer(t.source, t.policy, t.needs, t.plan, t.local_questions, staleness=c.sampling.async_staleness,
                         timeout_s=c.sampling.async_timeout_s, threads=max(1, torch.get_num_threads() // 2),
                         precision=c.model.precision, full_weights=t.full_weights)
