"""``unified-rl experiment process-vs-outcome``: GRPO with process vs outcome supervision on chains
where outcome success starts at 20-40%.

Figure 5's RL length (4-5 steps) leaves the comparison little room: the start solves 82% of the
4-step problems and 5% of the 5-step ones, so most GRPO groups are all right or all wrong. Here the
SFT starts also see 200 worked solutions of 4-5 steps (``ChainSplits(sft_long_steps=(4, 5))``), and
RL asks answers-only questions of 5-6 steps, where such a start succeeds on about a fifth (a third
of the 5-step problems). Arms, from the same saved starts with the same updates: the
SFT-continuation control, GRPO outcome, GRPO process. Each arm's lr is chosen from ``lr_grid`` on
the held-out validation questions in the first paired run (final greedy accuracy, ties to the
smaller lr), the rule of ``figure5-lr``; that run is also the pair's result. Evaluation: greedy
accuracy on two fresh sets of 5-6-step problems (``eval_in`` and ``eval_hard``, drawn with different
seeds); paired differences with 95% bootstrap intervals over runs and problems.
"""

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..progress import bars
from ...accuracy_stats import paired_difference
from .design import ARM_NAMES, Design, build_data, by_length, cell, correct, seeds_line, start, verdict
from ..machine_record import environment, measured_on
from .figure5_lr import SPLITS, Collected, best_lr, run_arm, write_metrics
from ..plots import figure
from .rl_vs_sft import RLvsSFT
from ..tasks.splits import ChainSplits

ARMS = ("control", "grpo", "grpo_process")
CLAIMS = [(("grpo", "grpo_process"), "GRPO process beats GRPO outcome"), (("control", "grpo"), "GRPO outcome beats more SFT (the control)"),
          (("control", "grpo_process"), "GRPO process beats more SFT (the control)")]


def _design() -> Design:
    splits = ChainSplits(sft_long_size=200, sft_long_steps=(4, 5), rl_steps=(5, 6), hard_steps=(5, 6))
    return Design(starts=RLvsSFT(splits=splits), rl_ops=(5, 6))


@dataclass
class ProcessVsOutcome:
    """Sizes (defaults: see ``docs/results/process-vs-outcome``)."""

    design: Design = field(default_factory=_design)
    lr_grid: tuple[float, ...] = (3e-5, 1e-4)  # figure5-lr chose 1e-4 for all three on 4-5 steps; process collapsed at it here

    @classmethod
    def quick(cls) -> "ProcessVsOutcome":
        """A CI-sized run (no claim)."""
        d = Design.quick()
        d.starts.splits = dataclasses.replace(d.starts.splits, sft_long_steps=(4, 5), rl_steps=(5, 6))
        d.rl_ops = (5, 6)
        return cls(design=d, lr_grid=(3e-5, 1e-4))


def clipped(history: list[dict], limit: float = 1.0) -> float:
    """The share of updates whose gradient norm exceeded the clipping limit (``TrainConfig.grad_clip``)."""
    norms = [m["grad_norm"] for m in history if "grad_norm" in m]
    return float(np.mean([n > limit for n in norms])) if norms else float("nan")


def run(out: str, p: ProcessVsOutcome, starts_dir: Optional[str] = None) -> str:
    """Run the experiment into ``out`` (starts in ``starts_dir``, default ``out/../starts``); returns its results Markdown."""
    t0 = time.perf_counter()
    d = p.design
    data = build_data(d)
    starts_dir = starts_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "starts")
    got = Collected(ARMS)
    scores = got.scores
    scores.update({("start", sp): [] for sp in SPLITS})
    clip = {arm: [] for arm in ARMS}
    log, starts, chosen, tuning = [], [], {}, {arm: {} for arm in ARMS}
    for sft_seed in range(d.sft_seeds):
        base, record = start(d, sft_seed, data, starts_dir)
        starts.append({"seed": sft_seed, "sha256": record["sha256"]})
        at_start = {sp: correct(base, data[sp], d) for sp in SPLITS}
        val0 = float(correct(base, data["validation"], d).mean())
        if bars():
            print(f"  SFT seed {sft_seed}: the start solves {100 * at_start['eval_in'].mean():.1f}% of 5-6-step problems", flush=True)
        for rl_seed in range(d.rl_seeds):
            seed = 1000 * sft_seed + rl_seed
            for sp in SPLITS:
                scores["start", sp].append(at_start[sp])
            for arm in ARMS:
                tried = {lr: run_arm(arm, base, data, d, lr, seed, [], val0) for lr in ((chosen[arm],) if arm in chosen else p.lr_grid)}
                if arm not in chosen:  # the first pair: every lr of the grid, the rule of figure5-lr
                    tuning[arm] = {f"{lr:g}": t["validation"] for lr, t in tried.items()}
                    chosen[arm] = best_lr({lr: t["validation"] for lr, t in tried.items()})
                log += [{**m, "sft_seed": sft_seed, "rl_seed": rl_seed, "lr": lr} for lr, t in tried.items() for m in t["log"]]
                r = tried[chosen[arm]]
                clip[arm].append(clipped(r["log"]))
                got.add(arm, r)
    write_metrics(out, log)
    a = {key: np.stack(v) for key, v in scores.items()}
    return _report(out, p, data, a, clip, got.drifts, got.curves, starts, chosen, tuning, time.perf_counter() - t0)


def _report(out, p: ProcessVsOutcome, data, a, clip, kl, curves, starts, chosen, tuning, seconds) -> str:
    d = p.design
    arms = ("start", *ARMS)
    names = {"eval_in": f"5-6 steps, set 1 (n = {len(data['eval_in'])})", "eval_hard": f"5-6 steps, set 2 (n = {len(data['eval_hard'])})"}
    lines = [seeds_line(d) + ".", "", "Greedy accuracy (%), mean over runs:", "",
             "| problems | " + " | ".join(ARM_NAMES[x] for x in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for sp in SPLITS:
        lines.append(f"| {names[sp]} | " + " | ".join(f"{100 * a[x, sp].mean():.1f}" for x in arms) + " |")
        for ops, idx in by_length(data[sp]).items():
            lines.append(f"| {ops} steps ({sp}, n = {len(idx)}) | " + " | ".join(f"{100 * a[x, sp][:, idx].mean():.1f}" for x in arms) + " |")
    lines += ["", "| claim | " + " | ".join(f"difference on {names[sp].split(' (')[0]} [95% CI]" for sp in SPLITS) + " | verdict (set 1) |",
              "|---|---|---|---|"]
    claims = []
    for (x, y), claim in CLAIMS:
        diffs = {sp: paired_difference(a[x, sp], a[y, sp]) for sp in SPLITS}
        v = verdict(diffs["eval_in"])
        claims.append({"claim": claim, "a": x, "b": y, "difference": {sp: list(diffs[sp]) for sp in SPLITS}, "verdict": v})
        lines.append(f"| {claim} | " + " | ".join(cell(diffs[sp]) for sp in SPLITS) + f" | {v} |")
    lines += ["", f"Each arm's lr, chosen on the final accuracy on {len(data['validation'])} held-out 5-6-step questions in the first paired "
              "run; then, at the chosen lr over all runs, the updates clipped and the drift:", "",
              "| arm | " + " | ".join(f"lr {lr:g}" for lr in p.lr_grid) + " | chosen | updates with the gradient norm clipped (> 1.0) "
              "| KL to reference (k3, last 10 updates) |", "|---" * (len(p.lr_grid) + 4) + "|"]
    for arm in ARMS:
        k = f"{np.mean(kl[arm]):.4f}" if kl[arm] else "(no reference)"
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(f"{100 * tuning[arm][f'{lr:g}']:.1f}" for lr in p.lr_grid)
                     + f" | {chosen[arm]:g} | {100 * np.nanmean(clip[arm]):.1f}% | {k} |")
    env = environment()
    lines += ["", "SFT starts (saved and reused; sha256 prefix): " + "; ".join(f"seed {s['seed']}: {s['sha256'][:12]}" for s in starts),
              measured_on(env, seconds)]
    results = {"accuracy": {f"{x}/{sp}": float(a[x, sp].mean()) for x in arms for sp in SPLITS}, "claims": claims,
               "clipped": {arm: clip[arm] for arm in ARMS}, "drift": kl, "chosen_lr": chosen, "tuning": tuning, "starts": starts, "environment": env, "seconds": seconds}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    np.savez_compressed(os.path.join(out, "scores.npz"), **{f"{x}/{sp}": a[x, sp] for x in arms for sp in SPLITS})  # [runs, problems] 0/1
    _plot(out, d, a, curves)
    return "\n".join(lines)


def _plot(out, d: Design, a, curves) -> None:
    fig, (left, right) = figure(10, 4, ncols=2)
    every = max(1, d.steps // 4)
    for arm in ARMS:
        c = 100 * np.array(curves[arm])
        left.plot([every * i for i in range(c.shape[1])], c.mean(0), marker="o", label=ARM_NAMES[arm])
    left.set(xlabel="update", ylabel="validation greedy accuracy (%)", title="5-6-step validation (mean over runs)")
    left.legend(fontsize=7)
    arms = ("start", *ARMS)
    means = [100 * a[x, "eval_in"].mean() for x in arms]
    right.bar(range(len(arms)), means)
    right.set_xticks(range(len(arms)), [ARM_NAMES[x].split(" (")[0] for x in arms], rotation=20, fontsize=7)
    right.set(ylabel="held-out greedy accuracy (%)", title="fresh 5-6-step problems (set 1)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "process-vs-outcome.png"), dpi=110)
