"""Named experiments that reproduce DeepSeekMath's findings in miniature (``unified-rl experiment``).

Each writes a results folder: ``metrics.jsonl``, PNG plots and ``results.md`` (a Markdown table).
The figures run on the RL-vs-SFT task design (``design.py``): SFT starts trained to convergence on
short worked solutions, saved and reused; RL on longer answers-only questions; paired statistics
over SFT seeds, RL seeds and problems.

* ``figure5`` (``figure5.py``): RFT on a fixed pool, Online RFT, GRPO outcome and process, and the
  SFT-continuation control; each arm's lr chosen from a grid the same way by ``figure5-lr``
  (``figure5_lr.py``), whose runs at the chosen lrs are figure5's first pair.
* ``process-vs-outcome`` (``process_vs_outcome.py``): GRPO process vs outcome on 5-6-step chains
  where the start succeeds on about a third.
* ``figure6`` (``figure6.py``): GRPO with a trained reward model, iterative vs not, with the reward
  model's held-out and on-policy accuracy.
* ``figure7`` (``figure7.py``): Pass@K and Maj@K, K = 1..64, before and after GRPO, on problems
  where Pass@64 starts far from 100%.
* ``grpo-vs-ppo-cost``: parameters held and seconds per update, GRPO vs PPO with its value model.
* ``rl-vs-sft`` (``rl_vs_sft.py``): GRPO on 3-5-step answers-only questions vs more SFT, from a
  start with no worked solution longer than 3 steps; ``rl-vs-sft-long``: the same with 200 worked
  4-step solutions among the short ones (the figures' starts).
"""

import copy
import dataclasses
import json
import os
import statistics
import time
from typing import Callable

import torch

from .. import engine, methods
from ..config import Optimisation
from ..learner import Learner
from .memory import peak, reset_peak
from .plots import figure


def _write(out: str, name: str, rows: list[dict]) -> None:
    with open(os.path.join(out, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def grpo_vs_ppo_cost(out: str, quick: bool, progress: bool) -> str:
    """Parameters held, seconds and peak memory per update: GRPO vs PPO with its value model, on one
    sampled rollout of RL questions from the design's SFT start (seed 0)."""
    from .design import Design, arm_trainer, build_data, start

    d = Design.quick() if quick else Design()
    data = build_data(d)
    base, _ = start(d, 0, data, os.path.join(os.path.dirname(os.path.abspath(out)), "starts"), progress)
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
        learner = Learner(policy, policy, list(policy.parameters()), method.coefficient, engine.ExecutionPlan(max_tokens=4096),
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


def _rl_vs_sft(out: str, quick: bool, progress: bool) -> str:
    from .rl_vs_sft import RLvsSFT, run

    return run(out, RLvsSFT.quick() if quick else RLvsSFT(), progress)


def _rl_vs_sft_long(out: str, quick: bool, progress: bool) -> str:
    """``rl-vs-sft`` with 200 worked 4-step solutions among the SFT data (``ChainSplits.sft_long_size``):
    a probe of one SFT seed x one RL seed, not a claim (its one run shared the CPU, so no time is stated)."""
    from .rl_vs_sft import RLvsSFT, run

    size = RLvsSFT.quick() if quick else RLvsSFT(sft_seeds=1, rl_seeds=1)
    size.splits = dataclasses.replace(size.splits, sft_long_size=8 if quick else 200)
    return run(out, size, progress)


def _figure5(out: str, quick: bool, progress: bool) -> str:
    from .design import Design
    from .figure5 import run

    return run(out, Design.quick() if quick else Design(), progress)


def _figure5_lr(out: str, quick: bool, progress: bool) -> str:
    from .design import Design
    from .figure5_lr import run

    return run(out, Design.quick() if quick else Design(), progress)


def _process_vs_outcome(out: str, quick: bool, progress: bool) -> str:
    from .process_vs_outcome import ProcessVsOutcome, run

    return run(out, ProcessVsOutcome.quick() if quick else ProcessVsOutcome(), progress)


def _figure7(out: str, quick: bool, progress: bool) -> str:
    from .figure7 import Figure7, run

    return run(out, Figure7.quick() if quick else Figure7(), progress)


def _figure6(out: str, quick: bool, progress: bool) -> str:
    from .figure6 import Figure6, run

    return run(out, Figure6.quick() if quick else Figure6(), progress)


EXPERIMENTS: dict[str, Callable[[str, bool, bool], str]] = {  # name -> experiment(out, quick, progress)
    "figure5-lr": _figure5_lr,
    "figure5": _figure5,
    "process-vs-outcome": _process_vs_outcome,
    "figure6": _figure6,
    "figure7": _figure7,
    "rl-vs-sft": _rl_vs_sft,
    "rl-vs-sft-long": _rl_vs_sft_long,
    "grpo-vs-ppo-cost": grpo_vs_ppo_cost,
}


def run_experiment(name: str, out_dir: str, quick: bool = False, progress: bool = True) -> str:
    """Run experiment ``name`` into ``out_dir`` (``quick`` for a CI-sized run); returns the results Markdown."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    table = EXPERIMENTS[name](out_dir, quick, progress)
    seconds = time.perf_counter() - t0
    text = f"# {name}\n\n{table}\n\nsize: {'quick' if quick else 'default'}; {seconds:.0f} s on {os.cpu_count()} CPUs, torch {torch.__version__}\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    return text
