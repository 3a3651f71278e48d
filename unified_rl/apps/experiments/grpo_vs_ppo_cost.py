"""``grpo-vs-ppo-cost``: parameters held, seconds and peak memory per update, GRPO vs PPO with its
critic, on one sampled rollout of RL questions from the design's SFT start (seed 0)."""

import copy
import json
import os
import statistics
import time

from ... import engine, methods
from ...config import Optimisation
from ...learner import AdamWLearner
from ..peak_memory import peak, reset_peak
from ..plots import figure
from .design import Design, arm_trainer, build_data, start


def _write(out: str, name: str, rows: list[dict]) -> None:
    with open(os.path.join(out, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def run(out: str, d: Design) -> str:
    """Parameters held, seconds and peak memory per update: GRPO vs PPO with its value model, on one
    sampled rollout of RL questions from the design's SFT start (seed 0)."""
    data = build_data(d)
    base, _ = start(d, 0, data, os.path.join(os.path.dirname(os.path.abspath(out)), "starts"))
    trainer = arm_trainer("grpo", base, data, d, 1e-4, 0)
    r = trainer.source.sample(trainer.policy, d.questions_per_step)
    r = trainer.reward(r, r.texts)
    r = r.replace(ref_logprobs=trainer.reference.logprobs(r, trainer.plan))
    rows: list[dict] = []
    lines = ["| method | parameters held (policy, reference, value model) | seconds per update (values + prepare + backward + AdamW + value step) | peak RSS growth during the update (MiB) |",
             "|---|---|---|---|"]
    for name, method in (("GRPO", methods.grpo(group_size=d.group_size)), ("PPO", methods.ppo())):
        policy = copy.deepcopy(base)
        critic = method.critic.build(policy) if method.critic is not None else None  # PPO's value model
        held = sum(p.numel() for p in policy.parameters()) * 2 + (sum(p.numel() for p in critic.model.parameters()) if critic else 0)
        learner = AdamWLearner(policy, policy, list(policy.parameters()), method.coefficient, engine.ExecutionPlan(max_tokens=4096),
                          Optimisation(lr=1e-5), critic)
        times, growth = [], []
        for step in range(4):  # the first is warm-up (optimizer state, allocator pools)
            base_bytes = reset_peak()
            t = time.perf_counter()
            learner.update(r, step)  # values (PPO), prepare, backward, clipping, AdamW, value step
            times.append(time.perf_counter() - t)
            growth.append((peak() - base_bytes) / 2**20)
        rows.append({"method": name, "parameters_held": held, "seconds_per_update": statistics.median(times[1:]),
                     "peak_growth_mib": statistics.median(growth[1:])})
        lines.append(f"| {name} | {held / 1e6:.2f}M | {rows[-1]['seconds_per_update']:.3f} | {rows[-1]['peak_growth_mib']:.0f} |")
    _write(out, "metrics.jsonl", rows)
    fig, axes = figure(10, 3.2, ncols=3)
    for ax, key, title in zip(axes, ("parameters_held", "seconds_per_update", "peak_growth_mib"),
                              ("parameters held", "seconds per update", "peak RSS growth (MiB)")):
        ax.bar([r["method"] for r in rows], [r[key] for r in rows], color=["C0", "C3"])
        ax.set(title=title)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "grpo_vs_ppo_cost.png"), dpi=110)
    return "\n".join(lines)
