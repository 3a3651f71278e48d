"""``unified-rl experiment figure7``: DeepSeekMath's Figure 7 (Maj@K and Pass@K before and after RL)
on the RL-vs-SFT design (``design.py``), on a split where Pass@64 starts far from 100%.

The problems are fresh ones of the RL length (4-5 operations): the start solves most 4-step ones
and few 5-step ones, so its Pass@64 starts near 60% rather than at the ceiling. For each saved SFT
start and RL seed: ``max(ks)`` samples per problem at temperature 1 (as in training), from the
start, after GRPO and after the SFT-continuation control; the unbiased Pass@K estimator and Maj@K averaged over K-subsets
(``unified_rl.accuracy_stats``); differences paired over starts, seeds and problems with 95% bootstrap
intervals.
"""

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ...data import Encoder
from ...evaluate import pass_and_majority_per_problem
from ...hf import make_sampler
from ...accuracy_stats import paired_difference
from .design import Design, build_data, cell, seeds_line, start, TeacherVariants, train_arm
from ..machine_record import environment, measured_on
from ..plots import figure
from ..tasks import char_tokenizer, extract_answer


@dataclass
class Figure7(TeacherVariants):
    """Sizes (defaults: 641 s on 2 cores with the saved starts)."""

    design: Design = field(default_factory=Design)
    lr: float = 1e-4                  # GRPO's lr: the one figure5's grid chose for GRPO
    problems: int = 256
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

    @classmethod
    def quick(cls) -> "Figure7":
        """A CI-sized run (no claim)."""
        return cls(design=Design.quick(), problems=8, ks=(1, 2, 4))


def _at_k(model, rows, f: Figure7, seed: int) -> dict:
    tok = char_tokenizer()
    return pass_and_majority_per_problem(model, Encoder(tok, 256, f.design.max_new_tokens + 1), rows, f.ks, sampler=make_sampler("static", tok),
                                         extract=extract_answer, max_new_tokens=f.design.max_new_tokens, seed=seed)


def _collect(f: Figure7, data: dict, rows: list, starts_dir: str):
    """Pass@K and Maj@K per run of the start, GRPO and the SFT continuation (same updates); the
    starts' records and the training log."""
    d = f.design
    before = {(k, w): [] for k in f.ks for w in ("pass", "maj")}
    after = {(k, w): [] for k in f.ks for w in ("pass", "maj")}
    control = {(k, w): [] for k in f.ks for w in ("pass", "maj")}  # the SFT continuation, same updates
    starts, log = [], []
    for sft_seed in range(d.sft_seeds):
        base, record = start(d, sft_seed, data, starts_dir)
        starts.append({"seed": sft_seed, "sha256": record["sha256"]})
        b = _at_k(base, rows, f, seed=1)
        for rl_seed in range(d.rl_seeds):
            model, hist = train_arm("grpo", base, data, d, f.lr, 1000 * sft_seed + rl_seed)
            log += [{**m, "sft_seed": sft_seed, "rl_seed": rl_seed} for m in hist]
            a = _at_k(model, rows, f, seed=1)
            c = _at_k(train_arm("control", base, data, d, f.lr, 1000 * sft_seed + rl_seed)[0], rows, f, seed=1)
            for key in before:
                before[key].append(b[key[0]][key[1]])
                after[key].append(a[key[0]][key[1]])
                control[key].append(c[key[0]][key[1]])
    return before, after, control, starts, log


PASS_MARGIN = 0.02  # "Pass@K did not rise" is an equivalence claim: its interval must lie within +-2 points


def _verdicts(p_diff, m_diff, margin: float = PASS_MARGIN) -> tuple[str, str]:
    """(Maj@K verdict, Pass@K verdict) from the paired differences at the largest K. "Pass@K did not
    rise" needs the interval inside +-``margin``: an interval that merely includes 0 detected no
    change, which is not evidence of none."""
    maj_verdict = "reproduced" if m_diff[1] > 0 else ("not reproduced (it fell)" if m_diff[2] < 0 else "inconclusive (the interval includes 0)")
    if m_diff[1] <= 0:  # the claim is a contrast: with Maj@K not raised, an unchanged Pass@K shows nothing
        return maj_verdict, "inconclusive: GRPO did not raise Maj@K either, so there is no contrast to test"
    if p_diff[1] > 0:
        return maj_verdict, "not reproduced: Pass@K rose"
    if -margin <= p_diff[1] and p_diff[2] <= margin:
        return maj_verdict, f"reproduced: Pass@K unchanged within +-{100 * margin:g} points (the interval lies inside the margin)"
    if p_diff[2] < 0:
        return maj_verdict, "reproduced: Pass@K did not rise (it fell)"
    return maj_verdict, (f"inconclusive: no change detected, but the interval is wider than the +-{100 * margin:g}-point margin, "
                         "so an unchanged Pass@K is not shown")


def _plot(f: Figure7, res: dict, vs_control: dict, out: str) -> None:
    d = f.design
    fig, ax = figure(6.5, 4)
    for when, i, style in (("start", 0, "--"), ("after GRPO", 1, "-")):
        ax.plot(f.ks, [100 * res[k, "pass"][i] for k in f.ks], style, marker="o", color="C0", label=f"Pass@K, {when}")
        ax.plot(f.ks, [100 * res[k, "maj"][i] for k in f.ks], style, marker="s", color="C1", label=f"Maj@K, {when}")
    ax.plot(f.ks, [100 * vs_control[k, "pass"][0] for k in f.ks], ":", marker="o", color="0.5", label="Pass@K, SFT continuation")
    ax.plot(f.ks, [100 * vs_control[k, "maj"][0] for k in f.ks], ":", marker="s", color="0.7", label="Maj@K, SFT continuation")
    ax.set(xscale="log", xlabel="K", ylabel="accuracy (%)", title=f"Maj@K and Pass@K before and after GRPO ({d.sft_seeds * d.rl_seeds} runs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figure7.png"), dpi=110)


def _lines(f: Figure7, rows: list, res: dict, vs_control: dict, verdicts: tuple[str, str], starts: list, env: dict, seconds: float) -> list[str]:
    d, kmax = f.design, max(f.ks)
    lines = [seeds_line(d) + f"; {len(rows)} fresh problems of {d.rl_ops[0]}-{d.rl_ops[1]} operations, {kmax} samples each at "
             f"temperature 1, GRPO lr {f.lr:g}, {d.steps} updates.", "",
             "| K | Pass@K before | after | difference [95% CI] | Maj@K before | after | difference [95% CI] |", "|---|---|---|---|---|---|---|"]
    for k in f.ks:
        cells = [f"{100 * res[k, w][0]:.1f} | {100 * res[k, w][1]:.1f} | {cell(res[k, w][2])}" for w in ("pass", "maj")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    more = "fresh demonstrations of the flawed teacher" if f.design.starts.splits.teacher_share else "worked short solutions"
    lines += ["", f"Against the SFT-continuation control (same updates on {more}, same problems):", "",
              "| K | Pass@K control | GRPO - control [95% CI] | Maj@K control | GRPO - control [95% CI] |", "|---|---|---|---|---|"]
    for k in f.ks:
        cells = [f"{100 * vs_control[k, w][0]:.1f} | {cell(vs_control[k, w][1])}" for w in ("pass", "maj")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines + ["", "| paper claim | difference at K = %d [95%% CI] | verdict |" % kmax, "|---|---|---|",
                    f"| RL raises Maj@K | {cell(res[kmax, 'maj'][2])} | {verdicts[0]} |",
                    f"| ... but not Pass@K | {cell(res[kmax, 'pass'][2])} | {verdicts[1]} |", "",
                    "SFT starts: " + "; ".join(f"seed {s['seed']}: {s['sha256'][:12]}" for s in starts), measured_on(env, seconds)]


def run(out: str, f: Figure7, starts_dir: Optional[str] = None) -> str:
    """Run the experiment into ``out`` (starts in ``starts_dir``, default ``out/../starts``); returns its results Markdown."""
    t0 = time.perf_counter()
    data = build_data(f.design)
    rows = data["eval_in"][: f.problems]
    starts_dir = starts_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "starts")
    before, after, control, starts, log = _collect(f, data, rows, starts_dir)
    np.savez_compressed(os.path.join(out, "scores.npz"), **{f"{arm}/{w}@{k}": np.array(v[k, w]) for arm, v in
                                                           (("start", before), ("grpo", after), ("control", control)) for k in f.ks for w in ("pass", "maj")})
    res, vs_control = {}, {}
    for key in before:
        x, y, z = np.array(before[key]), np.array(after[key]), np.array(control[key])
        res[key] = (float(x.mean()), float(y.mean()), paired_difference(x, y))
        vs_control[key] = (float(z.mean()), paired_difference(z, y))
    with open(os.path.join(out, "metrics.jsonl"), "w") as fh:
        for m in log:
            fh.write(json.dumps(m) + "\n")
    kmax, env = max(f.ks), environment()
    verdicts = _verdicts(res[kmax, "pass"][2], res[kmax, "maj"][2])
    lines = _lines(f, rows, res, vs_control, verdicts, starts, env, time.perf_counter() - t0)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump({"at_k": {f"{w}@{k}": {"before": v[0], "after": v[1], "difference": list(v[2]), "control": vs_control[k, w][0],
                                         "minus_control": list(vs_control[k, w][1])} for (k, w), v in res.items()},
                   "verdicts": {"maj": verdicts[0], "pass": verdicts[1]}, "starts": starts, "environment": env,
                   "seconds": time.perf_counter() - t0}, fh, indent=1)
    _plot(f, res, vs_control, out)
    return "\n".join(lines)
