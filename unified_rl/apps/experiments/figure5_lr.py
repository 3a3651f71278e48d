"""``unified-rl experiment figure5-lr``: Figure 5's learning-rate tuning, as its own experiment.

Every arm of Figure 5 (``design.ARMS``) at every lr of ``lr_grid``, on the first paired run (SFT
seed 0, RL seed 0). Each arm's lr is the one with the best final greedy accuracy on the held-out
RL-length validation questions (ties to the smaller lr): the same rule for every arm and the
control. Writes ``results.json`` (the chosen lrs, the tuning table, the design's key and the
start's sha256), ``runs.npz`` (every run's per-problem scores), ``metrics.jsonl`` and a plot of the
validation curves. ``figure5`` reads them: its lrs are these, and its first pair is these runs at
the chosen lrs (so Figure 5's time is split between the two commands, each under 30 minutes).
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Optional

import numpy as np

from .design import ARM_NAMES, ARMS, Design, build_data, collect_pool, correct, drift, start, train_arm
from ..machine_record import environment, measured_on
from ..plots import figure

SPLITS = ("eval_in", "eval_hard")


def design_key(d: Design) -> str:
    """What the first pair's runs depend on (every setting but the number of seeds), hashed."""
    x = dataclasses.asdict(d)
    x.pop("sft_seeds"), x.pop("rl_seeds")
    return hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_arm(arm: str, base, data: dict, d: Design, lr: float, seed: int, pool: list[dict], val0: float) -> dict:
    """One arm at one lr from ``base``: its final validation accuracy, validation curve, KL drift,
    per-problem scores on the evaluation splits and its training history."""
    eval_every = max(1, d.steps // 4)
    model, hist = train_arm(arm, base, data, d, lr, seed, pool=pool, eval_every=eval_every)
    evals = [m["eval/accuracy"] for m in hist if "eval/accuracy" in m]
    return {"validation": evals[-1] if evals else val0,  # no history: no update was made (an empty pool)
            "curve": [val0] + (evals or [val0] * (d.steps // eval_every)), "drift": drift(hist),
            "scores": {sp: correct(model, data[sp], d) for sp in SPLITS}, "log": hist}


def best_lr(validation: dict[float, float]) -> float:
    """The lr with the best final validation accuracy, ties to the smaller lr: every arm's rule."""
    return max(validation, key=lambda lr: (validation[lr], -lr))


class Collected:
    """Per-arm results over the paired runs: per-problem scores by split, validation curves, KL drift."""

    def __init__(self, arms):
        self.scores = {(arm, sp): [] for arm in arms for sp in SPLITS}
        self.curves: dict[str, list] = {arm: [] for arm in arms}
        self.drifts: dict[str, list] = {arm: [] for arm in arms}

    def add(self, arm: str, r: dict) -> None:
        """Keep one :func:`run_arm` result of ``arm``."""
        self.curves[arm].append(r["curve"])
        if r["drift"] is not None:
            self.drifts[arm].append(r["drift"])
        for sp in SPLITS:
            self.scores[arm, sp].append(r["scores"][sp])


def write_metrics(out: str, rows: list[dict]) -> None:
    """The training histories as ``out/metrics.jsonl``."""
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for m in rows:
            f.write(json.dumps(m) + "\n")


def run(out: str, d: Design, starts_dir: Optional[str] = None) -> str:
    """Tune into ``out`` (starts in ``starts_dir``, default ``out/../starts``); returns its results Markdown."""
    t0 = time.perf_counter()
    data = build_data(d)
    starts_dir = starts_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "starts")
    base, record = start(d, 0, data, starts_dir)
    val0 = float(correct(base, data["validation"], d).mean())
    pool, drawn = collect_pool(base, data, d, seed=0)
    runs = {(arm, lr): run_arm(arm, base, data, d, lr, 0, pool, val0) for arm in ARMS for lr in d.lr_grid}
    tuning = {arm: {f"{lr:g}": runs[arm, lr]["validation"] for lr in d.lr_grid} for arm in ARMS}
    chosen = {arm: best_lr({lr: runs[arm, lr]["validation"] for lr in d.lr_grid}) for arm in ARMS}
    write_metrics(out, [{**m, "sft_seed": 0, "rl_seed": 0, "lr_tried": lr} for (arm, lr), r in runs.items() for m in r["log"]])
    np.savez_compressed(os.path.join(out, "runs.npz"), **{f"{arm}/{lr:g}/{sp}": r["scores"][sp] for (arm, lr), r in runs.items() for sp in SPLITS})
    seconds = time.perf_counter() - t0
    env = environment()
    results = {"design_key": design_key(d), "start_sha256": record["sha256"], "chosen_lr": chosen, "tuning": tuning,
               "curves": {f"{arm}/{lr:g}": r["curve"] for (arm, lr), r in runs.items()},
               "drift": {f"{arm}/{lr:g}": r["drift"] for (arm, lr), r in runs.items()},
               "pool": {"sft_seed": 0, "rl_seed": 0, "drawn": drawn, "kept": len(pool)}, "validation_start": val0,
               "environment": env, "seconds": seconds}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    _plot(out, d, runs)
    lines = [f"Each arm at each lr on the first paired run (SFT seed 0, RL seed 0); final greedy accuracy (%) on {len(data['validation'])} "
             f"held-out RL-length validation questions (the start: {100 * val0:.1f}); the best is chosen, ties to the smaller lr.", "",
             "| arm | " + " | ".join(f"lr {lr:g}" for lr in d.lr_grid) + " | chosen | KL to reference at the chosen lr (k3, last 10 updates) |",
             "|---" * (len(d.lr_grid) + 3) + "|"]
    for arm in ARMS:
        k = runs[arm, chosen[arm]]["drift"]
        lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(f"{100 * tuning[arm][f'{lr:g}']:.1f}" for lr in d.lr_grid)
                     + f" | {chosen[arm]:g} | {'(no reference)' if k is None else f'{k:.4f}'} |")
    lines += ["", f"RFT's pool: {drawn} samples drawn once from the start, {100 * len(pool) / max(1, drawn):.1f}% correct and kept.",
              f"SFT start seed 0: {record['sha256'][:12]}; design key {results['design_key']}.", measured_on(env, seconds)]
    return "\n".join(lines)


def _plot(out: str, d: Design, runs: dict) -> None:
    fig, axes = figure(3.2 * len(ARMS), 3.2, ncols=len(ARMS))
    eval_every = max(1, d.steps // 4)
    for ax, arm in zip(axes, ARMS):
        for lr in d.lr_grid:
            c = 100 * np.array(runs[arm, lr]["curve"])
            ax.plot([eval_every * i for i in range(len(c))], c, marker="o", label=f"lr {lr:g}")
        ax.set(xlabel="update", title=ARM_NAMES[arm].split(" (")[0])
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation greedy accuracy (%)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figure5-lr.png"), dpi=110)


def tuned(tuning_dir: str, d: Design, start_sha256: str, starts_dir: str) -> dict:
    """The tuning of ``d`` in ``tuning_dir`` (run there first when missing, or made for another
    design or start): its ``results.json`` plus ``scores`` {(arm, lr, split): [problems] 0/1}."""
    path = os.path.join(tuning_dir, "results.json")
    why = "there is none"
    if os.path.exists(path):
        with open(path) as f:
            res = json.load(f)
        if res.get("design_key") != design_key(d):
            why = f"it was made for another design (key {res.get('design_key')}, this one {design_key(d)})"
        elif res.get("start_sha256") != start_sha256:
            why = f"it was made from another SFT start ({str(res.get('start_sha256'))[:12]}, this one {start_sha256[:12]})"
        else:
            why = ""
    if why:
        print(f"figure5: running the lr tuning (figure5-lr) into {tuning_dir} first: {why}", flush=True)
        os.makedirs(tuning_dir, exist_ok=True)
        table = run(tuning_dir, d, starts_dir)
        with open(os.path.join(tuning_dir, "results.md"), "w") as f:
            f.write("# figure5-lr\n\n" + table + "\n")
        with open(path) as f:
            res = json.load(f)
    with np.load(os.path.join(tuning_dir, "runs.npz")) as z:
        res["scores"] = {tuple(k.split("/")): z[k] for k in z.files}
    return res
