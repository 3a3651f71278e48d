"""Named experiments that reproduce DeepSeekMath's findings in miniature (``unified-rl experiment``).

Each writes a results folder: ``metrics.jsonl``, PNG plots and ``results.md`` (a Markdown table).
All start from the demo's SFT checkpoint on the embedded arithmetic task.

* ``online-vs-offline`` (Figure 5): RFT, Online RFT, GRPO outcome and GRPO process, same number of
  updates and questions, several seeds; held-out accuracy over training with spread across seeds.
* ``maj-vs-pass`` (Figure 7): Pass@K and Maj@K, K = 1..64, before and after GRPO.
* ``iterative`` (Figure 6): GRPO with a trained reward model, iterative (reference reset, reward
  model re-trained with 10% replay) against non-iterative.
* ``grpo-vs-ppo-cost``: peak memory, parameters held and seconds per update, GRPO vs PPO.
* ``rl-vs-sft`` (``rl_vs_sft.py``): GRPO on longer answers-only questions vs more SFT, from a
  converged SFT start on short worked solutions (issue 18's task design), paired statistics;
  ``rl-vs-sft-long``: the same with 200 worked 4-step solutions among the short ones.
"""

import copy
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import engine, methods
from ..config import TrainConfig
from ..evaluate import pass_and_majority_per_problem
from ..statistics import mean_sd, paired_difference
from ..hf import make_sampler, reward_model_from_policy
from ..loop import Trainer
from ..rewards import ModelReward, OutcomeReward
from .demo import DemoSettings, sft_start
from .memory import peak, reset_peak
from .plots import figure
from .tasks import extract_answer, task_reward


@dataclass
class Size:
    """An experiment's size: the SFT start and RL phase (``run``, the demo's settings), plus seeds
    and the Pass@K / Maj@K evaluation."""

    run: DemoSettings = field(default_factory=DemoSettings)
    seeds: int = 3
    ks: tuple = (1, 2, 4, 8, 16, 32, 64)
    pass_questions: int = 128

    @classmethod
    def quick(cls) -> "Size":
        """A CI-sized run (no claim)."""
        return cls(run=DemoSettings.quick(), seeds=2, ks=(1, 2, 4), pass_questions=8)


def _write(out: str, name: str, rows: list[dict]) -> None:
    with open(os.path.join(out, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _save(fig, ax, path: str, **labels) -> None:
    """Label, add the legend and write the figure."""
    ax.set(**labels)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _start(size: Size):
    model, tok, train_rows, eval_rows, sft = sft_start(size.run, progress=False)
    return model, tok, train_rows, eval_rows, sft.evaluate(eval_rows)


def _cfg(method: str, size: Size, seed: int, **kw) -> TrainConfig:
    r = size.run
    return TrainConfig(method=method, steps=r.grpo_steps, questions_per_step=r.questions_per_step, group_size=r.group_size, lr=r.grpo_lr,
                       warmup_steps=min(r.grpo_warmup, r.grpo_steps // 2), beta=r.beta, epsilon=r.epsilon, eval_every=r.eval_every,
                       eval_size=r.eval_size, seed=seed, max_new_tokens=r.max_new_tokens, **kw)


def _trainer(model, tok, cfg: TrainConfig, train_rows, eval_rows=None, **kw) -> Trainer:
    """A Trainer for the registered method ``cfg.method`` with the arithmetic task's exact reward."""
    method = methods.from_config(cfg)
    kw.setdefault("reward", task_reward(method, tok))
    return Trainer(model, tok, method, train_rows, cfg, eval_rows=eval_rows, extract=extract_answer, **kw)


def online_vs_offline(out: str, size: Size, progress: bool) -> str:
    """Figure 5: RFT, Online RFT, GRPO outcome and process from one SFT start, several seeds."""
    base, tok, train_rows, eval_rows, acc0 = _start(size)
    names = ["rft", "online_rft", "grpo", "grpo_process"]
    curves: dict[str, list[list[float]]] = {n: [] for n in names}
    log = []
    for name in names:
        for seed in range(size.seeds):
            model = copy.deepcopy(base)
            cfg = _cfg(name, size, seed)
            trainer = _trainer(model, tok, cfg, train_rows, eval_rows, phase=name)
            hist = trainer.run(progress=progress)
            curve = [acc0] + [m["eval/accuracy"] for m in hist if "eval/accuracy" in m]
            curves[name].append(curve)
            log += [{**m, "seed": seed} for m in hist]
    _write(out, "metrics.jsonl", log)
    steps = [0] + list(range(size.run.eval_every, size.run.grpo_steps + 1, size.run.eval_every))
    fig, ax = figure(6.5, 4)
    lines = ["| method | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name in names:
        runs = curves[name]
        mean, sd = zip(*(mean_sd([r[i] for r in runs]) for i in range(len(steps))))  # sd: the sample one (ddof 1)
        ax.plot(steps, mean, marker="o", label=name)
        ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], alpha=0.2)
        lines.append(f"| {name} | " + " | ".join(f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in zip(mean, sd)) + " |")
    _save(fig, ax, os.path.join(out, "online_vs_offline.png"), xlabel="policy update", ylabel="held-out greedy accuracy",
          title=f"online vs offline ({size.seeds} seeds, mean ± sample sd)")
    return "\n".join(lines)


def maj_vs_pass(out: str, size: Size, progress: bool) -> str:
    """Figure 7: Pass@K and Maj@K before and after GRPO."""
    model, tok, train_rows, eval_rows, acc0 = _start(size)
    cfg = _cfg("grpo", size, 0)
    trainer = _trainer(model, tok, cfg, train_rows, eval_rows, phase="grpo")
    rows = eval_rows[: size.pass_questions]
    at_k = dict(sampler=trainer.sampler, extract=extract_answer, seed=1, max_new_tokens=size.run.max_new_tokens)  # as in training
    before = pass_and_majority_per_problem(model, trainer.encoder, rows, size.ks, **at_k)
    trainer.run(progress=progress)
    after = pass_and_majority_per_problem(model, trainer.encoder, rows, size.ks, **at_k)
    results = {}  # (K, pass|maj) -> (before, after, difference, low, high): paired over the same problems
    for k in size.ks:
        for what in ("pass", "maj"):
            b, a = np.array([before[k][what]]), np.array([after[k][what]])
            results[k, what] = (float(b.mean()), float(a.mean()), *paired_difference(b, a))
    _write(out, "metrics.jsonl", [{"k": k, "what": w, "before": r[0], "after": r[1], "difference": r[2], "ci95": [r[3], r[4]]}
                                  for (k, w), r in results.items()])
    fig, ax = figure(6.5, 4)
    for when, i, style in (("before GRPO", 0, "--"), ("after GRPO", 1, "-")):
        ax.plot(size.ks, [results[k, "pass"][i] for k in size.ks], style, marker="o", color="C0", label=f"Pass@K {when}")
        ax.plot(size.ks, [results[k, "maj"][i] for k in size.ks], style, marker="s", color="C1", label=f"Maj@K {when}")
    _save(fig, ax, os.path.join(out, "maj_vs_pass.png"), xscale="log", xlabel="K", ylabel="accuracy",
          title="Maj@K and Pass@K before and after GRPO")
    lines = [f"Pass@K: unbiased estimator from {max(size.ks)} samples per problem; Maj@K: averaged over K-subsets; "
             f"{len(rows)} problems, one run; 95% paired bootstrap intervals over problems.", "",
             "| K | Pass@K before | Pass@K after | difference [95% CI] | Maj@K before | Maj@K after | difference [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for k in size.ks:
        cells = []
        for what in ("pass", "maj"):
            b, a, d, lo, hi = results[k, what]
            cells.append(f"{100 * b:.1f} | {100 * a:.1f} | {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reward_model(tok, policy, train_rows, n: int, seed: int, sampler) -> ModelReward:
    """A reward model initialised from the SFT policy's trunk and trained on ``n`` labelled samples
    of the SFT policy (rule labels), one epoch."""
    from ..data import Encoder, SampledSource

    torch.manual_seed(seed)
    rm = ModelReward(reward_model_from_policy(policy), tok, labeler=OutcomeReward(extract_answer), lr=1e-4, seed=seed)
    src = SampledSource(train_rows[-3000:], Encoder(tok), sampler, samples_per_question=8, max_new_tokens=40, seed=seed + 100)
    samples = []
    while len(samples) < n:
        samples += rm.label(src.sample(policy, 64))
    rm.continual_update(samples[:n], replay=0.0, epochs=1)
    return rm


def iterative(out: str, size: Size, progress: bool) -> str:
    """Figure 6: GRPO with a reward model, iterative vs not."""
    base, tok, train_rows, eval_rows, acc0 = _start(size)
    lines = ["| run | " + " | ".join(["start", "end"]) + " |", "|---|---|---|"]
    fig, ax = figure(6.5, 4)
    log = []
    for label, iterations in (("non-iterative", 1), ("iterative (3 iterations)", 3)):
        model = copy.deepcopy(base)
        rm = _reward_model(tok, model, train_rows, 64 if size.run.grpo_steps < 10 else 4096, seed=0, sampler=make_sampler("static", tok))
        cfg = _cfg("grpo", size, 0, iterations=iterations)
        cfg.steps = max(1, size.run.grpo_steps // iterations)
        cfg.eval_every = max(1, size.run.eval_every // iterations) if iterations > 1 else size.run.eval_every
        trainer = _trainer(model, tok, cfg, train_rows, eval_rows, reward=rm, phase=label)
        hist = trainer.run(progress=progress)
        pts = [(0, acc0)] + [(m["step"], m["eval/accuracy"]) for m in hist if "eval/accuracy" in m]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        lines.append(f"| {label} | {100 * acc0:.1f} | {100 * pts[-1][1]:.1f} |")
        log += hist
    _write(out, "metrics.jsonl", log)
    _save(fig, ax, os.path.join(out, "iterative.png"), xlabel="policy update", ylabel="held-out greedy accuracy",
          title="GRPO with a reward model: iterative vs not")
    return "\n".join(lines)


def grpo_vs_ppo_cost(out: str, size: Size, progress: bool) -> str:
    """Parameters held, seconds and peak memory per update: GRPO vs PPO with its value model."""
    base, tok, train_rows, eval_rows, _ = _start(size)
    cfg = _cfg("grpo", size, 0)
    trainer = _trainer(copy.deepcopy(base), tok, cfg, train_rows)
    r = trainer.source.sample(trainer.policy, size.run.questions_per_step)
    r = trainer.reward(r, r.texts)
    r = r.replace(ref_logprobs=trainer.reference.logprobs(r, trainer.plan))
    rows: list[dict] = []
    lines = ["| method | parameters held (policy, reference, value model) | seconds per update (prepare + backward + AdamW + value step) | peak RSS growth during the update (MiB) |",
             "|---|---|---|---|"]
    for name, method in (("GRPO", methods.grpo(group_size=size.run.group_size)), ("PPO", methods.ppo())):
        policy = copy.deepcopy(base)
        method.coefficient.attach(policy)
        held = sum(p.numel() for p in policy.parameters()) * 2  # policy + reference
        if name == "PPO":
            held += sum(p.numel() for p in method.coefficient.advantage.value_model.parameters())
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
        times, growth = [], []
        for _ in range(4):  # the first is warm-up (optimizer state, allocator pools)
            base_bytes = reset_peak()
            t = time.perf_counter()
            prepared = method.coefficient.prepare(r)
            opt.zero_grad()
            engine.backward(policy, prepared, method.coefficient, engine.ExecutionPlan(max_tokens=4096))
            opt.step()
            method.coefficient.update(prepared)
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


def _sized(experiment: Callable[[str, Size, bool], str]) -> Callable[[str, bool, bool], str]:
    return lambda out, quick, progress: experiment(out, Size.quick() if quick else Size(), progress)


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


EXPERIMENTS: dict[str, Callable[[str, bool, bool], str]] = {  # name -> experiment(out, quick, progress)
    "online-vs-offline": _sized(online_vs_offline),
    "maj-vs-pass": _sized(maj_vs_pass),
    "iterative": _sized(iterative),
    "grpo-vs-ppo-cost": _sized(grpo_vs_ppo_cost),
    "rl-vs-sft": _rl_vs_sft,
    "rl-vs-sft-long": _rl_vs_sft_long,
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
