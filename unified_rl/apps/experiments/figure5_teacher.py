"""``unified-rl experiment figure5-teacher``: DeepSeekMath's Figure 5 (online vs offline data,
graded vs 0/1 coefficients, process vs outcome) on the flawed-teacher design (``flawed_teacher.py``).

The arms of ``flawed-teacher`` from the same saved starts, with one change that makes RFT and
Online RFT comparable: **the same number of gradient samples per update**. Online RFT samples
``questions_per_step x G`` completions per update and its coefficient is non-zero on the correct
ones only; it runs first, and RFT's batch is then the mean number of correct samples its updates
had (rounded), drawn from the fixed pool of the start's correct samples. (The two still normalise
differently: Online RFT's mean runs over every sample drawn, RFT's over its batch; AdamW's update
is nearly scale-free, so the count is what matters.) Validation accuracy (RL-length questions)
every ``eval_every`` updates gives the curves; greedy accuracy on fresh problems of three lengths,
split into affected and unaffected problems, gives the claims, each with its interval over
problems and over runs (the verdict reads the wider).
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..machine_record import environment
from ..plots import figure
from .design import ARM_NAMES, Design, build_data, collect_pool, quick_teacher_design, start, teacher_design, train_arm
from .figure5 import CLAIMS
from .flawed_teacher import SPLITS, evaluate, strata, stratum_accuracy, stratum_difference

ORDER = ("control", "online_rft", "rft", "grpo", "grpo_process")  # Online RFT before RFT: RFT's batch is Online RFT's count


@dataclass
class Figure5Teacher:
    """Sizes: 2 SFT seeds x 2 RL seeds, 100 updates per arm at lr 1e-4, 1,024 problems per split."""

    design: Design = field(default_factory=lambda: teacher_design(sft_seeds=2, rl_seeds=2))
    lr: float = 1e-4
    eval_size: int = 1024
    eval_every: int = 25

    @classmethod
    def quick(cls) -> "Figure5Teacher":
        """A CI-sized run (no claim)."""
        return cls(design=quick_teacher_design(rl_seeds=2), eval_size=16, eval_every=1)


def _curve(history: list[dict]) -> list[float]:
    return [m["eval/accuracy"] for m in history if "eval/accuracy" in m]


def _one_run(f: Figure5Teacher, base, data: dict, rows: dict, seed: int, found: dict, extra: dict) -> None:
    """Train every arm of one paired run and add its evaluations, curves and RFT batch to ``found`` / ``extra``."""
    d = f.design
    pool, drawn = collect_pool(base, data, d, seed)
    batch = None
    for arm in ORDER:
        model, hist = train_arm(arm, base, data, d, f.lr, seed, pool=pool if arm == "rft" else None, eval_every=f.eval_every,
                                rft_batch=batch, checkpoint_every=0)
        if arm == "online_rft":  # its gradient samples per update: the correct ones among those drawn
            correct = [m["reward/mean"] * d.questions_per_step * d.group_size for m in hist if "reward/mean" in m]
            batch = max(1, round(float(np.mean(correct))))
            extra["rft_batch"].append(batch)
            extra["pool"].append({"drawn": drawn, "kept": len(pool)})
        extra["curves"].setdefault(arm, []).append(_curve(hist))
        extra["log"] += [{**m, "arm": arm, "seed": seed} for m in hist]
        for sp in SPLITS:
            found.setdefault((arm, sp), []).append(evaluate(model, rows[sp], d))


def run(out: str, f: Figure5Teacher) -> str:
    """Train and evaluate every arm into ``out``; returns the results table (Markdown)."""
    d, data = f.design, build_data(f.design)
    rows = {sp: data[sp][: f.eval_size] for sp in SPLITS}
    found, extra = {}, {"rft_batch": [], "pool": [], "curves": {}, "log": []}
    for sft_seed in range(d.sft_seeds):
        base, _ = start(d, sft_seed, data, os.path.join(os.path.dirname(os.path.abspath(out)), "starts"))
        start_eval = {sp: evaluate(base, rows[sp], d) for sp in SPLITS}
        for rl_seed in range(d.rl_seeds):
            for sp in SPLITS:
                found.setdefault(("start", sp), []).append(start_eval[sp])
            _one_run(f, base, data, rows, 1000 * sft_seed + rl_seed, found, extra)
    arms = ("start", *ORDER)
    record = {"accuracy": {f"{a}|{sp}": stratum_accuracy(found[a, sp]) for a in arms for sp in SPLITS},
              "claims": [{"claim": claim, "a": a, "b": b, **{f"{sp}|{k}": stratum_difference(found[a, sp], found[b, sp], m) for sp in SPLITS
                                                               for k, m in strata(found["start", sp]).items()}}
                         for (a, b), claim in CLAIMS],
              "rft_batch": extra["rft_batch"], "pools": extra["pool"], "curves": extra["curves"], "runs": len(found["start", "eval_in"]),
              "problems": {sp: int(len(rows[sp])) for sp in SPLITS}, "settings": dataclasses.asdict(f), "environment": environment()}
    np.savez(os.path.join(out, "scores.npz"), **{f"{a}|{sp}|{k}": np.stack([r[k] for r in found[a, sp]]) for a in arms for sp in SPLITS
                                                 for k in ("correct", "affected", "reached", "wrong")})
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(record, fh, indent=1, default=str)
    with open(os.path.join(out, "metrics.jsonl"), "w") as fh:
        fh.writelines(json.dumps(m) + "\n" for m in extra["log"])
    _plot(record, arms, f, os.path.join(out, "figure5.png"))
    return _table(record, arms)


def _table(record: dict, arms: tuple) -> str:
    acc = record["accuracy"]
    lines = [f"{record['runs']} paired run(s); RFT's batch (Online RFT's mean correct samples per update): "
             f"{', '.join(map(str, record['rft_batch']))}.", "",
             "Greedy accuracy (%), affected / unaffected problems:", "", "| arm | " + " | ".join(SPLITS.values()) + " |", "|---|---|---|---|"]
    for a in arms:
        lines.append(f"| {ARM_NAMES[a]} | " + " | ".join(f"{acc[f'{a}|{sp}']['affected']:.1f} / {acc[f'{a}|{sp}']['unaffected']:.1f}"
                                                        for sp in SPLITS) + " |")
    lines += ["", "Each paper claim as b - a (points) on affected problems, 95% intervals over problems and over runs; the verdict "
              "reads the wider:", "", "| claim | " + " | ".join(SPLITS.values()) + " |", "|---|---|---|---|"]
    for c in record["claims"]:
        cells = []
        for sp in SPLITS:
            x = c[f"{sp}|affected"]
            runs = f", runs [{x['runs'][1]:+.1f}, {x['runs'][2]:+.1f}]" if x["runs"] else ""
            cells.append(f"{x['problems'][0]:+.1f} [{x['problems'][1]:+.1f}, {x['problems'][2]:+.1f}]{runs}: {x['verdict'].split(' (')[0]}")
        lines.append(f"| {c['claim']} | " + " | ".join(cells) + " |")
    lines += ["", f"Intervals reported: {2 * len(SPLITS) * len(record['claims'])} (affected and unaffected, {len(SPLITS)} splits, "
              f"{len(record['claims'])} claims); the unaffected ones are in results.json."]
    return "\n".join(lines)


def _plot(record: dict, arms: tuple, f: Figure5Teacher, path: str) -> None:
    """Validation curves per arm (mean over runs) and the final affected / unaffected accuracies on 2-3 steps."""
    fig, (left, right) = figure(11, 4, ncols=2)
    for arm in ORDER:
        runs = [c for c in record["curves"][arm] if c]  # an empty RFT pool makes no update and no curve
        if not runs:
            continue
        c = 100 * np.array(runs)
        left.plot([f.eval_every * i for i in range(1, c.shape[1] + 1)], c.mean(0), marker="o", label=ARM_NAMES[arm])
    left.set(xlabel="update", ylabel="validation greedy accuracy (%)", title="RL-length validation (mean over runs)")
    left.legend(fontsize=7)
    sp = "eval_short"
    for k, stratum in enumerate(("affected", "unaffected")):
        right.bar([i + 0.4 * k for i in range(len(arms))], [record["accuracy"][f"{a}|{sp}"][stratum] for a in arms], 0.4,
                  hatch="" if k == 0 else "//", alpha=0.9 if k == 0 else 0.5, label=stratum)
    right.set_xticks([i + 0.2 for i in range(len(arms))], [ARM_NAMES[a].split(" (")[0] for a in arms], rotation=30, ha="right", fontsize=7)
    right.set(ylabel="greedy accuracy (%)", title=f"fresh {SPLITS[sp]} problems")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
