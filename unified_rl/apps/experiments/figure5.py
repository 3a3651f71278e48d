"""``unified-rl experiment figure5``: DeepSeekMath's Figure 5 on the RL-vs-SFT design (``design.py``).

RFT on a fixed pool collected once from the start, Online RFT, GRPO with outcome and with process
supervision, and the SFT-continuation control, from the same saved SFT starts, the same number of
updates. Each arm's learning rate is the one ``figure5-lr`` (``figure5_lr.py``) chose from
``lr_grid`` on the held-out RL-length validation questions in the first paired run (SFT seed 0, RL
seed 0); that pair's results are the tuning's runs at the chosen lrs (read from its ``runs.npz``;
the tuning runs first when it is missing or was made for another design or start), the other
pairs are trained here. ``metrics.jsonl`` holds the pairs trained here. Greedy
accuracy on fresh problems of the RL length and harder ones; paired differences with 95% bootstrap
intervals over runs and problems (``unified_rl.accuracy_stats.paired_difference``).
"""

import json
import os
import time
from typing import Optional

import numpy as np

from ...accuracy_stats import paired_difference
from .design import ARM_NAMES, ARMS, Design, build_data, by_length, cell, collect_pool, correct, seeds_line, start, verdict
from ..machine_record import environment, measured_on
from .figure5_lr import SPLITS, Collected, run_arm, tuned, write_metrics
from ..plots import figure

# the paper's claims as (a, b): b - a > 0 is the claim
CLAIMS = [(("rft", "online_rft"), "Online RFT beats RFT (online data)"),
          (("online_rft", "grpo"), "GRPO (graded coefficients) beats Online RFT (0/1)"),
          (("grpo", "grpo_process"), "GRPO process beats GRPO outcome"),
          (("control", "grpo"), "GRPO beats more SFT (the control)"),
          (("control", "rft"), "RFT (fixed pool) beats more SFT (not a paper claim)")]


def run(out: str, d: Design, starts_dir: Optional[str] = None, tuning_dir: Optional[str] = None) -> str:
    """Run the experiment into ``out`` (starts in ``starts_dir``, default ``out/../starts``; the lr
    tuning in ``tuning_dir``, default ``out/../figure5-lr``, run there first when missing); returns
    its results Markdown."""
    t0 = time.perf_counter()
    data = build_data(d)
    parent = os.path.dirname(os.path.abspath(out))
    starts_dir = starts_dir or os.path.join(parent, "starts")
    tuning_dir = tuning_dir or os.path.join(parent, "figure5-lr")
    eval_every = max(1, d.steps // 4)
    got = Collected(ARMS)
    scores, curves, drifts = got.scores, got.curves, got.drifts
    scores.update({("start", sp): [] for sp in SPLITS})
    log, starts, pools, tune = [], [], [], None
    for sft_seed in range(d.sft_seeds):
        base, record = start(d, sft_seed, data, starts_dir)
        starts.append({"seed": sft_seed, "sha256": record["sha256"], "chosen_step": record["chosen_step"],
                       "validation_accuracy": record["validation_accuracy"]})
        if tune is None:  # seed 0's start: the tuning's first pair is this figure's first pair
            tune = tuned(tuning_dir, d, record["sha256"], starts_dir)
            chosen = {arm: float(lr) for arm, lr in tune["chosen_lr"].items()}
        at_start = {sp: correct(base, data[sp], d) for sp in SPLITS}
        val0 = float(correct(base, data["validation"], d).mean())
        for rl_seed in range(d.rl_seeds):
            for sp in SPLITS:
                scores["start", sp].append(at_start[sp])
            if (sft_seed, rl_seed) == (0, 0):
                pools.append(tune["pool"])
                for arm in ARMS:
                    key = f"{arm}/{chosen[arm]:g}"
                    curves[arm].append(tune["curves"][key])
                    if tune["drift"][key] is not None:
                        drifts[arm].append(tune["drift"][key])
                    for sp in SPLITS:
                        scores[arm, sp].append(tune["scores"][arm, f"{chosen[arm]:g}", sp])
                continue
            seed = 1000 * sft_seed + rl_seed
            pool, drawn = collect_pool(base, data, d, seed)
            pools.append({"sft_seed": sft_seed, "rl_seed": rl_seed, "drawn": drawn, "kept": len(pool)})
            for arm in ARMS:
                r = run_arm(arm, base, data, d, chosen[arm], seed, pool, val0)
                log += [{**m, "sft_seed": sft_seed, "rl_seed": rl_seed, "lr": chosen[arm]} for m in r["log"]]
                got.add(arm, r)
    write_metrics(out, log)
    return _report(out, d, data, scores, chosen, tune, curves, drifts, starts, pools, eval_every, time.perf_counter() - t0)


def _report(out, d: Design, data, scores, chosen, tune, curves, drifts, starts, pools, eval_every, seconds) -> str:
    lo, hi = d.rl_ops
    names = {"eval_in": f"{lo}-{hi} steps (the RL length, n = {len(data['eval_in'])})",
             "eval_hard": f"{d.starts.splits.hard_steps[0]}-{d.starts.splits.hard_steps[1]} steps (harder, n = {len(data['eval_hard'])})"}
    a = {key: np.stack(v) for key, v in scores.items()}
    arms = ("start", *ARMS)
    lines = [seeds_line(d) + ".", "", "Greedy accuracy (%), mean over runs:", "",
             "| split | " + " | ".join(ARM_NAMES[x] for x in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for sp in SPLITS:
        lines.append(f"| {names[sp]} | " + " | ".join(f"{100 * a[x, sp].mean():.1f}" for x in arms) + " |")
    lines += ["", "By chain length:", "", "| operations | " + " | ".join(ARM_NAMES[x] for x in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for sp in SPLITS:
        for ops, idx in by_length(data[sp]).items():
            lines.append(f"| {ops} ({sp}, n = {len(idx)}) | " + " | ".join(f"{100 * a[x, sp][:, idx].mean():.1f}" for x in arms) + " |")
    results, claims = {}, []
    lines += ["", "| paper claim | " + " | ".join(f"difference on {names[sp].split(' (')[0]} [95% CI]" for sp in SPLITS)
              + " | verdict (RL length) |", "|---|---|---|---|"]
    for (x, y), claim in CLAIMS:
        diffs = {sp: paired_difference(a[x, sp], a[y, sp]) for sp in SPLITS}
        v = verdict(diffs["eval_in"])
        claims.append({"claim": claim, "a": x, "b": y, "difference": {sp: list(diffs[sp]) for sp in SPLITS}, "verdict": v})
        lines.append(f"| {claim} | " + " | ".join(cell(diffs[sp]) for sp in SPLITS) + f" | {v} |")
    tuning = tune["tuning"]
    lines += ["", "Each arm's lr (from `figure5-lr`), chosen on the final accuracy on "
              f"{len(data['validation'])} held-out RL-length questions in the first paired run:", "",
              "| arm | " + " | ".join(f"lr {lr:g}" for lr in d.lr_grid) + " | chosen | KL to reference (k3, last 10 updates) |",
              "|---" * (len(d.lr_grid) + 3) + "|"]
    for arm in ARMS:
        kl = f"{np.mean(drifts[arm]):.4f}" if drifts[arm] else "(no reference)"
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(f"{100 * tuning[arm][f'{lr:g}']:.1f}" if f"{lr:g}" in tuning[arm] else "-"
                                                          for lr in d.lr_grid) + f" | {chosen[arm]:g} | {kl} |")
    kept = sum(p["kept"] for p in pools) / max(1, sum(p["drawn"] for p in pools))
    env = environment()
    lines += ["", f"RFT's pools: {pools[0]['drawn']} samples drawn once from the start per run, {100 * kept:.1f}% correct and kept.",
              "SFT starts (saved and reused; sha256 prefix, checkpoint chosen on validation): "
              + "; ".join(f"seed {s['seed']}: {s['sha256'][:12]}, step {s['chosen_step']}, validation {100 * s['validation_accuracy']:.1f}%"
                          for s in starts),
              measured_on(env, seconds) + f"; the first pair's runs and the tuning: figure5-lr's {tune['seconds']:.0f} s"]
    results = {"accuracy": {f"{x}/{sp}": float(a[x, sp].mean()) for x in arms for sp in SPLITS}, "claims": claims, "chosen_lr": chosen,
               "tuning": tuning, "drift": {k: v for k, v in drifts.items()}, "pools": pools, "starts": starts, "environment": env,
               "seconds": seconds, "tuning_seconds": tune["seconds"]}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    np.savez_compressed(os.path.join(out, "scores.npz"), **{f"{x}/{sp}": a[x, sp] for x in arms for sp in SPLITS})  # [runs, problems] 0/1
    _plot(out, d, a, curves, eval_every)
    return "\n".join(lines)


def _plot(out, d: Design, a, curves, eval_every) -> None:
    fig, (left, right) = figure(11, 4, ncols=2)
    steps = [0] + list(range(eval_every, d.steps + 1, eval_every))
    for arm in ARMS:
        c = np.array(curves[arm]) * 100
        left.plot(steps[: c.shape[1]], c.mean(0), marker="o", label=ARM_NAMES[arm])
    left.set(xlabel="update", ylabel="validation greedy accuracy (%)", title="RL-length validation (chosen lr; mean over runs)")
    left.legend(fontsize=7)
    arms = ("start", *ARMS)
    for i, sp in enumerate(SPLITS):
        vals = [100 * a[x, sp].mean() for x in arms]
        right.bar([k + (i - 0.5) * 0.4 for k in range(len(arms))], vals, 0.4, label=sp)
    right.set_xticks(range(len(arms)), [ARM_NAMES[x].split(" (")[0] for x in arms], rotation=30, fontsize=7)
    right.set(ylabel="held-out greedy accuracy (%)", title="fresh problems (eval_in: RL length; eval_hard: 5-6 steps)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figure5.png"), dpi=110)
