"""The demo on the embedded default, telling one story: can RL with a verifier correct what more
supervised data does not?

A teacher writes worked arithmetic solutions with a systematic error: in 60% of them every product
of 40 or more is written 10 too high and carried through to the answer (``tasks.teacher``). A
0.86M-parameter Llama is trained to convergence on 2,000 of its 2-3-step solutions and 200 4-step
ones (the checkpoint chosen on held-out ones) and learns the error with the rest. From that start,
GRPO trains on 4-5-step questions that come with their true answers only; beside it, the control
spends the same number of updates on **fresh** demonstrations of the same teacher (genuinely more
supervised data). Both are scored by greedy accuracy on fresh problems of the SFT length (2-3
steps) and the RL length (4-5), split into problems with a step the teacher gets wrong
(*affected*) and without (*unaffected*, a negative control), and by the error rate on affected
steps; the summary and the plot give GRPO - control with its 95% bootstrap interval over problems
(one run: the interval does not cover seeds; ``unified-rl experiment flawed-teacher-full`` does).

The SFT start is shipped (``tasks/starts/``: safetensors and its record -- settings, digest,
validation curve, machine): floating-point sums differ between CPUs and 1,000 SFT steps amplify the
differences, so every machine starts from the same weights. ``--sft-from-scratch`` trains it
instead (several minutes), and ``python -m unified_rl.apps.demo --write-start`` is how the shipped
file was made.
"""

import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .progress import bars, progress_bars
from ..hf import save_model
from .experiments.design import Design, arm_trainer, build_data, correct, quick_teacher_design, start, teacher_design
from .experiments.flawed_teacher import evaluate, step_error, strata, stratum_accuracy, stratum_difference
from .machine_record import cpu_model, file_sha256
from .plots import _smooth, figure, plot_training
from .experiments.rl_vs_sft import SHIPPED_STARTS as SHIPPED
from .experiments.rl_vs_sft import start_file
from .tasks import char_tokenizer, parse_problem
from .tasks.teacher import Flaw

SPLITS = {"eval_short": "2-3 steps (the SFT length)", "eval_in": "4-5 steps (the RL length)"}
# The benchmarks' fixed weights: the earlier demo's start (300 SFT steps at constant lr 1e-3 on the
# 2-4-step task of ``ArithmeticTask()``; 62.1% greedy on its first 256 held-out problems, in the record),
# kept so that the benchmarks' recorded numbers stay comparable.
BENCHMARK_START = os.path.join(os.path.dirname(__file__), "tasks", "benchmark_start.safetensors")


@dataclass
class DemoSettings:
    """The RL phase and its control (the SFT start is the flawed-teacher design's, seed ``seed``)."""

    steps: int = 100
    questions_per_step: int = 16
    group_size: int = 8
    lr: float = 1e-4                  # the lr figure5's grid chose for GRPO and the control
    beta: float = 0.04
    epsilon: float = 0.2
    validation_size: int = 512        # the curves during training: affected 2-3-step problems past the evaluated ones
    eval_every: int = 25
    eval_size: int = 2048             # fresh problems per evaluation split (as the flawed-teacher experiment)
    seed: int = 0                     # the SFT start's seed
    rl_seed: Optional[int] = None     # the RL phase's seed (sampling, data order); None: ``seed``
    tiny_start: bool = False          # the quick design's start (6 SFT steps on 64 rows; trained in seconds)
    flawed_teacher: bool = True       # False: the figures' start, trained on correct solutions (notebooks, calculator)

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A small version for tests and CI (seconds, not minutes; no accuracy claim)."""
        return cls(steps=4, questions_per_step=4, group_size=4, validation_size=8, eval_every=2, eval_size=16, tiny_start=True)

    def design(self) -> Design:
        """The design (flawed teacher or not) with this RL phase (one SFT seed, one RL seed)."""
        if self.tiny_start:
            base = quick_teacher_design() if self.flawed_teacher else Design.quick()
        else:
            base = teacher_design() if self.flawed_teacher else Design()
        return dataclasses.replace(base, steps=self.steps, questions_per_step=self.questions_per_step, group_size=self.group_size,
                                   beta=self.beta, epsilon=self.epsilon, validation_size=self.validation_size, sft_seeds=1, rl_seeds=1)


def shipped_start_fits(s: DemoSettings) -> bool:
    """Whether the shipped SFT start is the one ``s`` asks for."""
    return os.path.exists(start_file(s.design().starts, s.seed, SHIPPED))


def write_metrics(history: list[dict], out_dir: str) -> None:
    """Write the per-step metrics as ``metrics.csv``."""
    keys = sorted({k for m in history for k in m})
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def sft_start(s: DemoSettings, out_dir: str, from_scratch: bool = False):
    """(model, record, data, shipped): the shipped start where it fits and ``from_scratch`` is off,
    else one trained into ``out_dir/starts`` (or loaded from there by a later run)."""
    d = s.design()
    data = build_data(d)
    shipped = not from_scratch and shipped_start_fits(s)
    model, record = start(d, s.seed, data, SHIPPED if shipped else os.path.join(out_dir, "starts"))
    return model, record, data, shipped


def _stopped(history: list, model, out_dir: str, phase: str, step: int, t0: float) -> dict:
    """Ctrl-C during the demo: keep what was done (metrics, plot, model) and say so."""
    write_metrics(history, out_dir)
    plot_training(history, os.path.join(out_dir, "plot.png"), title=f"demo, interrupted during {phase}")
    save_model(model, char_tokenizer(), os.path.join(out_dir, "model"))
    return {"interrupted": f"{phase} step {step}", "seconds_total": time.perf_counter() - t0}


def run_demo(out_dir: str = "runs/demo", settings: Optional[DemoSettings] = None, progress: bool = True, from_scratch: bool = False) -> dict:
    """Run the demo into ``out_dir`` and return its summary (accuracies, the gain and its interval, seconds)."""
    with progress_bars(progress):
        return _demo(out_dir, settings, from_scratch)


def _demo(out_dir: str, settings: Optional[DemoSettings], from_scratch: bool) -> dict:
    s = settings or DemoSettings()
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "metrics.jsonl")):
        os.remove(os.path.join(out_dir, "metrics.jsonl"))
    base, record, data, shipped = sft_start(s, out_dir, from_scratch)
    t_sft = time.perf_counter()
    d, rl_seed = s.design(), s.seed if s.rl_seed is None else s.rl_seed
    data = {**data, "validation": curve_rows(data, s)}
    val0 = float(correct(base, data["validation"], d).mean())
    history = [{"phase": arm, "step": 0, "eval/accuracy": val0} for arm in ("grpo", "control")]  # the start, on both curves
    models = {}
    for arm in ("grpo", "control"):
        trainer = arm_trainer(arm, base, data, d, s.lr, rl_seed, eval_every=s.eval_every, out_dir=out_dir)
        trainer.run(progress=bars())
        history += trainer.history
        if trainer.interrupted:
            return _stopped(history, trainer.policy, out_dir, arm, trainer.step_count, t0)
        models[arm] = trainer.policy
    t_rl = time.perf_counter()
    models = {"start": base, **models}
    splits = [sp for sp in SPLITS if sp in data]
    scores = {(arm, sp): evaluate(m, data[sp][: s.eval_size], d) for arm, m in models.items() for sp in splits}
    write_metrics(history, out_dir)
    save_model(models["grpo"], char_tokenizer(), os.path.join(out_dir, "model"))
    summary = {"parameters": sum(p.numel() for p in base.parameters()), **_scored(scores, models, splits),
               "splits": {sp: SPLITS[sp] for sp in splits}, "curve_problems": len(data["validation"]),
               "curve_rows": "held-out affected 2-3-step problems" if "eval_short" in data else "held-out RL-length questions",
               "seconds_start": t_sft - t0, "seconds_rl": t_rl - t_sft, "seconds_total": time.perf_counter() - t0,
               "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", "settings": dataclasses.asdict(s),
               "sft_start": (f"shipped ({record['sha256'][:12]}, SFT step {record['chosen_step']}, validation "
                             f"{100 * record['validation_accuracy']:.1f}% on its held-out short demonstrations)"
                             if shipped else "trained in this run")}
    plot_demo(history, summary, os.path.join(out_dir, "plot.png"))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


STRATA = ("affected", "unaffected")


def curve_rows(data: dict, s: DemoSettings) -> list[dict]:
    """The problems the curves during training are measured on: ``validation_size`` affected 2-3-step
    problems after the ``eval_size`` evaluated at the end (disjoint from them and from RL), or, in a
    design without the teacher, the RL-length questions held out of RL."""
    if "eval_short" not in data:
        return data["validation"]
    flaw = Flaw()
    rows = [r for r in data["eval_short"][s.eval_size:] if flaw.affected(parse_problem(r["prompt"]))][: s.validation_size]
    return rows or data["validation"]  # (a CI-sized design may hold none)


def _scored(scores: dict, models: dict, splits: list) -> dict:
    """Accuracies (%), error on affected steps (%) and GRPO's paired differences (points) by split and
    stratum, as the flawed-teacher experiment computes them (one run: intervals over problems)."""
    def diff(a, b, sp):
        return {k: stratum_difference([scores[a, sp]], [scores[b, sp]], m)["problems"] for k, m in strata([scores["start", sp]]).items()}

    return {"accuracy": {arm: {sp: stratum_accuracy([scores[arm, sp]]) for sp in splits} for arm in models},
            "affected_step_error": {arm: {sp: step_error([scores[arm, sp]]) for sp in splits} for arm in models},
            "grpo_minus_control_points": {sp: diff("control", "grpo", sp) for sp in splits},
            "grpo_minus_start_points": {sp: diff("start", "grpo", sp) for sp in splits},
            "eval_problems": {sp: {k: int(m.sum()) for k, m in strata([scores["start", sp]]).items()} for sp in splits}}


def plot_demo(history: list[dict], summary: dict, path: str) -> str:
    """Validation accuracy during training (GRPO vs control), GRPO's reward and KL, and the final
    accuracies on affected and unaffected problems with GRPO's gain over the control and its interval."""
    fig, axes = figure(15, 4.4, ncols=3)
    _curves(axes[0], history, summary.get("curve_problems"), summary.get("curve_rows", "validation questions"))
    grpo = [m for m in history if m.get("phase") == "grpo" and "reward/mean" in m]
    axes[1].plot([m["step"] for m in grpo], [m["reward/mean"] for m in grpo], color="C0", alpha=0.4, label="reward (share correct)")
    axes[1].plot([m["step"] for m in grpo], _smooth([m["reward/mean"] for m in grpo]), color="C0",
                 label="reward, 10-step mean")
    twin = axes[1].twinx()
    twin.plot([m["step"] for m in grpo], [m.get("kl/k3", np.nan) for m in grpo], color="C3", lw=0.8, label="KL to reference (k3)")
    twin.set_ylabel("KL (nats per token)", fontsize=8)
    axes[1].set(xlabel="update", ylabel="training reward", title="GRPO: reward and drift")
    axes[1].legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")
    arms, names = ("start", "control", "grpo"), {"start": "SFT start", "control": "SFT on fresh\nteacher data", "grpo": "GRPO"}
    acc, splits = summary["accuracy"], list(summary["splits"])
    bars_, width = [(sp, k) for sp in splits for k in STRATA], 0.8 / (2 * len(splits))
    for j, (sp, k) in enumerate(bars_):
        b = axes[2].bar([i + (j - (len(bars_) - 1) / 2) * width for i in range(3)], [acc[a][sp][k] for a in arms], width,
                        hatch="" if k == "affected" else "//", alpha=0.9 if k == "affected" else 0.5, color=f"C{splits.index(sp)}",
                        label=f"{summary['splits'][sp].split(' (')[0]}, {k}")
        axes[2].bar_label(b, fmt="%.0f", fontsize=6)
    axes[2].set_xticks(range(3), [names[a] for a in arms])
    axes[2].set_ylim(0, 115)
    g, glo, ghi = summary["grpo_minus_control_points"][splits[0]]["affected"]
    axes[2].set(ylabel="greedy accuracy on fresh problems (%)",
                title=f"GRPO - control, affected {summary['splits'][splits[0]].split(' (')[0]}:\n{g:+.1f} points [95% CI {glo:+.1f}, {ghi:+.1f}]")
    axes[2].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)  # below: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _curves(ax, history: list[dict], n: Optional[int], what: str) -> None:
    """Validation accuracy of GRPO and the control during training, with binomial bands over ``n`` questions."""
    bounds = []
    for arm, colour in (("grpo", "C0"), ("control", "C1")):
        pts = [(m["step"], m["eval/accuracy"]) for m in history if m.get("phase") == arm and "eval/accuracy" in m]
        xs, ps = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        ax.plot(xs, 100 * ps, marker="o", color=colour, label="GRPO" if arm == "grpo" else "SFT on fresh teacher data")
        if n and len(ps):  # the binomial 95% band of an accuracy measured on n questions
            half = 1.96 * np.sqrt(ps * (1 - ps) / n)
            ax.fill_between(xs, 100 * (ps - half), 100 * (ps + half), color=colour, alpha=0.15, lw=0)
            bounds += [100 * (ps - half).min(), 100 * (ps + half).max()]
    if bounds:  # room for the bands and at least 10 points either way: noise does not fill the panel
        ax.set_ylim(max(0.0, min(bounds) - 10), min(100.0, max(bounds) + 10))
    band = f"; bands: binomial 95% over {n} questions" if n else ""
    ax.set(xlabel="update", ylabel="accuracy (%)", title=f"during training: {what}")
    ax.text(0.01, 0.01, f"update 0 = the SFT start{band}", transform=ax.transAxes, fontsize=7, va="bottom")
    ax.legend(fontsize=8, loc="upper left")


def write_start() -> None:
    """Train the default SFT start from scratch into the shipped folder (weights and record)."""
    s = DemoSettings()
    d = s.design()
    path = start_file(d.starts, s.seed, SHIPPED)
    if os.path.exists(path):
        os.remove(path)
    start(d, s.seed, build_data(d), SHIPPED)
    print(f"wrote {path} ({file_sha256(path)[:12]}...)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-start"]:
        sys.exit("usage: python -m unified_rl.apps.demo --write-start")
    write_start()
