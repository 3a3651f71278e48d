"""The demo on the embedded default, telling one story: can RL add what more supervised data
does not?

From a 0.86M-parameter Llama trained to convergence on short worked solutions (2,000 arithmetic
chains of 2-3 operations and 200 of 4; the checkpoint chosen on held-out ones), GRPO trains on
longer questions (4-5 operations) that come with their answers only. Beside it, the control spends
the same number of updates on more of the worked solutions (SFT continuation). Both are scored by
greedy accuracy on fresh problems of the RL length and harder ones (5-6 operations); the summary
and the plot give GRPO's gain over the control with its 95% bootstrap interval over problems (one
run: the interval does not cover seeds; ``unified-rl experiment figure5`` does).

The SFT start is shipped (``tasks/starts/``: safetensors and its record -- settings, digest,
validation curve, machine): floating-point sums differ between CPUs and 1,000 SFT steps amplify the
differences, so every machine starts from the same weights. ``--sft-from-scratch`` trains it
instead (several minutes), and ``python -m unified_rl.apps.demo --write-start`` is how the shipped
file was made (on an AMD EPYC).
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
from ..accuracy_stats import paired_difference
from .experiments.design import Design, arm_trainer, build_data, correct, start
from .machine_record import cpu_model, file_sha256
from .plots import _smooth, figure, plot_training
from .experiments.rl_vs_sft import SHIPPED_STARTS as SHIPPED
from .experiments.rl_vs_sft import start_file
from .tasks import char_tokenizer

SPLITS = ("eval_in", "eval_hard")
# The benchmarks' fixed weights: the earlier demo's start (300 SFT steps at constant lr 1e-3 on the
# 2-4-step task of ``ArithmeticTask()``; 62.1% greedy on its first 256 held-out problems, in the record),
# kept so that the benchmarks' recorded numbers stay comparable.
BENCHMARK_START = os.path.join(os.path.dirname(__file__), "tasks", "benchmark_start.safetensors")


@dataclass
class DemoSettings:
    """The RL phase and its control (the SFT start is :class:`design.Design`'s, seed ``seed``)."""

    steps: int = 100
    questions_per_step: int = 16
    group_size: int = 8
    lr: float = 1e-4                  # the lr figure5's grid chose for GRPO and the control
    beta: float = 0.04
    epsilon: float = 0.2
    validation_size: int = 512        # RL-length questions held out of RL (as figure5): the curves during training
    eval_every: int = 25
    seed: int = 0                     # the SFT start's seed
    rl_seed: Optional[int] = None     # the RL phase's seed (sampling, data order); None: ``seed``
    tiny_start: bool = False          # the quick design's start (6 SFT steps on 64 rows; trained in seconds)

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A small version for tests and CI (seconds, not minutes; no accuracy claim)."""
        return cls(steps=4, questions_per_step=4, group_size=4, validation_size=8, eval_every=2, tiny_start=True)

    def design(self) -> Design:
        """The figures' :class:`design.Design` with this RL phase (one SFT seed, one RL seed)."""
        base = Design.quick() if self.tiny_start else Design()
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
    scores = {(arm, sp): correct(m, data[sp], d) for arm, m in models.items() for sp in SPLITS}
    accuracy = {arm: {sp: float(scores[arm, sp].mean()) for sp in SPLITS} for arm in models}
    gain = {sp: paired_difference(scores["control", sp][None], scores["grpo", sp][None]) for sp in SPLITS}
    over_start = {sp: paired_difference(scores["start", sp][None], scores["grpo", sp][None]) for sp in SPLITS}
    write_metrics(history, out_dir)
    save_model(models["grpo"], char_tokenizer(), os.path.join(out_dir, "model"))
    lo, hi = d.rl_ops
    summary = {"parameters": sum(p.numel() for p in base.parameters()), "accuracy": accuracy,
               "grpo_minus_control_points": {sp: [100 * x for x in gain[sp]] for sp in SPLITS},
               "grpo_minus_start_points": {sp: [100 * x for x in over_start[sp]] for sp in SPLITS},
               "eval_problems": {sp: len(data[sp]) for sp in SPLITS},
               "splits": {"eval_in": f"{lo}-{hi} operations (the RL length)", "eval_hard": "5-6 operations (harder)"},
               "seconds_start": t_sft - t0, "seconds_rl": t_rl - t_sft, "seconds_total": time.perf_counter() - t0,
               "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", "settings": dataclasses.asdict(s),
               "sft_start": (f"shipped ({record['sha256'][:12]}, SFT step {record['chosen_step']}, validation "
                             f"{100 * record['validation_accuracy']:.1f}% on short chains)" if shipped else "trained in this run")}
    plot_demo(history, summary, os.path.join(out_dir, "plot.png"))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def plot_demo(history: list[dict], summary: dict, path: str) -> str:
    """Validation accuracy during training (GRPO vs control), GRPO's reward and KL, and the final
    accuracies with GRPO's gain over the control and its interval."""
    fig, axes = figure(15, 4.4, ncols=3)
    n = int(summary.get("settings", {}).get("validation_size", 0)) or None
    bounds = []
    for arm, colour in (("grpo", "C0"), ("control", "C1")):
        pts = [(m["step"], m["eval/accuracy"]) for m in history if m.get("phase") == arm and "eval/accuracy" in m]
        xs, ps = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        axes[0].plot(xs, 100 * ps, marker="o", color=colour, label="GRPO" if arm == "grpo" else "SFT continuation")
        if n and len(ps):  # the binomial 95% band of an accuracy measured on n questions
            half = 1.96 * np.sqrt(ps * (1 - ps) / n)
            axes[0].fill_between(xs, 100 * (ps - half), 100 * (ps + half), color=colour, alpha=0.15, lw=0)
            bounds += [100 * (ps - half).min(), 100 * (ps + half).max()]
    if bounds:  # room for the bands and at least 10 points either way: noise does not fill the panel
        axes[0].set_ylim(max(0.0, min(bounds) - 10), min(100.0, max(bounds) + 10))
    band = f"; bands: binomial 95% over {n} questions" if n else ""
    axes[0].set(xlabel="update", ylabel="accuracy (%)", title="validation (RL-length questions) during training")
    axes[0].text(0.01, 0.01, f"update 0 = the SFT start on this validation set{band}", transform=axes[0].transAxes, fontsize=7,
                 va="bottom")
    axes[0].legend(fontsize=8, loc="upper left")
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
    arms = ("start", "control", "grpo")
    names = {"start": "SFT start", "control": "SFT continuation", "grpo": "GRPO"}
    for i, sp in enumerate(SPLITS):
        bars = axes[2].bar([k + (i - 0.5) * 0.4 for k in range(3)], [100 * summary["accuracy"][a][sp] for a in arms], 0.4,
                           label=summary["splits"][sp])
        axes[2].bar_label(bars, fmt="%.1f", fontsize=7)
    axes[2].set_xticks(range(3), [names[a] for a in arms])
    axes[2].set_ylim(0, 100 * max(summary["accuracy"][a][sp] for a in arms for sp in SPLITS) * 1.25 + 1)
    g, glo, ghi = summary["grpo_minus_control_points"]["eval_in"]
    axes[2].set(ylabel="greedy accuracy on fresh problems (%)", title=f"GRPO - control, {summary['splits']['eval_in'].split(' (')[0]}:\n{g:+.1f} points [95% CI {glo:+.1f}, {ghi:+.1f}]")
    axes[2].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)  # below: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


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
