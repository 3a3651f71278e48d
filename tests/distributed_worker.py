"""One rank of the 2-process gradient test (started by torchrun from test_distributed.py): its half of the union
batch (whole groups), prepared with union-batch normalisers, backward through each wrapper (FSDP2,
DDP) with its own micro-batch budget; writes its (full) gradients."""

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from helpers import multi_turn_rollout, random_rollout, tiny_model, with_policy_logprobs, with_steps  # noqa: E402

import unified_rl as url  # noqa: E402
from unified_rl import methods  # noqa: E402

WRAPPERS = ("fsdp", "ddp")
BUDGETS = (9, 1000)  # rank 0 cuts its half into many micro-batches, rank 1 runs it whole

CASES = {  # name -> method builder
    "sft": lambda: methods.sft(),
    "rft": lambda: methods.rft(),
    "grpo": lambda: methods.grpo(beta=0.04),
    "grpo_process": lambda: methods.grpo(beta=0.04, supervision="process"),
    "dpo": lambda: methods.dpo(),
    "ppo": lambda: methods.ppo(),
    "dapo": lambda: methods.dapo(),
    "dapo_batch_std": lambda: methods.dapo(scale_rewards="batch"),
    "dr_grpo": lambda: methods.dr_grpo(max_completion_length=8),
    "reinforce_pp": lambda: methods.reinforce_pp(),
    "orpo": lambda: methods.orpo(0.5),
    "online_dpo": lambda: methods.online_dpo(0.5),  # its NLL part counts every rank's chosen tokens
    "opd": lambda: methods.opd(0.5),  # the teacher's log-probs of the sampled tokens, token mean over every rank's tokens
    "kto": lambda: methods.kto(0.5, 1.0, 0.7),
    # terms over the vocabulary, run inside the wrapper's forward: a teacher (whole on every rank), the entropy, the full KL
    "gkd": lambda: methods.gkd(0.5),
    "distill": lambda: methods.distill(),
    "grpo_entropy_kl_full": lambda: url.Method("grpo_entropy_kl_full", url.coefficients.chain(
        url.coefficients.group_normalized(), url.coefficients.ppo_clip(0.2), aggregation=url.coefficients.sequence_mean(),
        vocabulary=(url.coefficients.entropy_bonus(0.05), url.coefficients.kl_full(0.1))), url.data.Sampled(2)),  # z0 from every rank's kl rows, 1/N over every rank's labelled rows
    # multi-turn episodes: environment tokens (completion_mask 0) between the model's turns
    "episodes_grpo": lambda: methods.grpo(beta=0.04),
    "episodes_grpo_process": lambda: methods.grpo(beta=0.04, supervision="process"),
    "episodes_dapo": lambda: methods.dapo(),
    "episodes_dr_grpo": lambda: methods.dr_grpo(max_completion_length=40),
    "episodes_rloo": lambda: methods.rloo(0.05),
}


def critic_for(name: str):
    """The method's critic (PPO's value model), built from the same model on every rank; None for the others."""
    spec = CASES[name]().critic
    return spec.build(tiny_model(0)) if spec is not None else None


def union_batch(name: str):
    """The same 8-group batch on every rank (and in the single process), with the critic's values where the method reads them."""
    model = tiny_model(0)
    if name.startswith("episodes_"):
        return with_policy_logprobs(model, multi_turn_rollout(21), 21).replace(truncated=torch.arange(8) % 3 == 0)
    r = with_steps(with_policy_logprobs(model, random_rollout(21, n_groups=4, group_size=2, completion_max=8), 21), 21)
    r = r.replace(chosen=torch.arange(r.batch_size) % 2 == 0, truncated=torch.arange(r.batch_size) % 3 == 0,
                  teacher_logprobs=r.ref_logprobs - 0.5 * r.old_logprobs)
    if name == "kto":  # each group: a labelled row and a kl row; desirable and undesirable rows both present
        r = r.replace(chosen=torch.arange(r.batch_size) % 4 == 0, kl_sample=torch.arange(r.batch_size) % 2 == 1)
    critic = critic_for(name)
    return r.replace(values=critic.values(r)) if critic is not None else r


def method_for(name: str):
    return CASES[name]()


def others_for(name: str) -> dict:
    """The whole models a method's terms over the vocabulary read (the same on every rank and in one process)."""
    reads = url.coefficients.reads_of(method_for(name).coefficient.vocabulary)
    return {k: tiny_model(seed) for k, seed in (("teacher", 7), ("reference", 8)) if k in reads}


def rank_rows(union, rank: int, world: int) -> list[int]:
    """Whole groups: rank r takes groups r, r + world, ..."""
    groups = union.group_ids.unique().tolist()
    mine = set(groups[rank::world])
    return [i for i in range(union.batch_size) if int(union.group_ids[i]) in mine]


def main(names: list, out: str) -> None:
    """Run under torchrun: join the job, then for each method write this rank's gradient."""
    import faulthandler

    faulthandler.dump_traceback_later(150, exit=True)  # a hung collective fails the job with its stack
    url.hf.init_process_group(timeout_s=120)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        for name in names:
            union = union_batch(name)
            local = union.select(rank_rows(union, rank, world))
            method = method_for(name)
            prepared = method.coefficient.prepare(local)
            for wrapper in WRAPPERS:
                model = tiny_model(0)
                wrapped = getattr(url.hf, wrapper)(model)
                others = others_for(name)
                with contextlib.ExitStack() as whole:
                    for other in others.values() if wrapper == "fsdp" else ():  # sharded like the Trainer shards them, gathered for the pass
                        url.hf.shard(other)
                        whole.enter_context(url.hf.gathered(other))
                    url.engine.backward(wrapped, prepared, method.coefficient, url.ExecutionPlan(max_tokens=BUDGETS[rank]), others)
                grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).contiguous()
                         for n, p in model.named_parameters()}
                save_file(grads, os.path.join(out, f"{name}-{wrapper}-rank{rank}.safetensors"))
                del wrapped  # DDP's reducer holds the process group
            for wrapper in WRAPPERS if critic_for(name) is not None else ():
                # PPO's value model: sharded by FSDP2 (as the learner does) or whole on every rank (DDP)
                critic = critic_for(name)
                if wrapper == "fsdp":
                    url.hf.shard_trained(critic.model, critic.optimizer)
                critic.backward(method.coefficient.prepare(local))
                grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).contiguous()
                         for n, p in critic.model.named_parameters()}
                save_file(grads, os.path.join(out, f"{name}-value-{wrapper}-rank{rank}.safetensors"))
        objects = url.distributed.global_objects([("rank", rank)] * (rank + 1))
        assert objects == [("rank", 0), ("rank", 1), ("rank", 1)], objects
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[2:], sys.argv[1])
