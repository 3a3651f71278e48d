"""``unified-rl experiment flawed-teacher``: can RL with a verifier correct what more supervised data
cannot? The task, model and pipeline of the figures (``design.py``) with one change, the supervised
data: a teacher that writes every product of 40 or more 10 too high in 60% of its worked solutions
(``tasks.teacher``). The SFT start learns from it; RL questions keep their true answers.

Arms, each from the same start with the same number of updates: the control (SFT on **fresh**
demonstrations of the same teacher -- genuinely more supervised data), RFT on a fixed pool, Online
RFT, GRPO with outcome and with process rewards. Greedy accuracy on fresh problems of the SFT length
(2-3 steps), the RL length (4-5) and harder ones (5-6), split into problems with a step the teacher
gets wrong (*affected*) and without (*unaffected*: a built-in negative control), and the error rate
on affected steps the model reaches with every earlier step right. Differences against the control
are paired over problems (bootstrap) and, with several runs, over runs (t); the verdict reads the wider.
"""

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ...accuracy_stats import paired_difference, run_level_difference
from ...data import Encoder
from ...evaluate import greedy_texts
from ...hf import make_sampler
from ..machine_record import environment
from ..tasks import char_tokenizer, extract_answer, parse_problem
from ..tasks.teacher import Flaw, affected_step_errors
from .design import ARM_NAMES, Design, build_data, collect_pool, quick_teacher_design, start, teacher_design, train_arm, verdict

ARMS = ("control", "rft", "online_rft", "grpo", "grpo_process")
SPLITS = {"eval_short": "2-3 steps", "eval_in": "4-5 steps", "eval_hard": "5-6 steps"}


@dataclass
class FlawedTeacher:
    """The run's sizes: the design (its starts' splits carry the teacher), the arms' lr, problems per split."""

    design: Design = field(default_factory=teacher_design)
    lr: float = 1e-4
    eval_size: int = 2048

    @classmethod
    def quick(cls) -> "FlawedTeacher":
        """A CI-sized run (no claim)."""
        return cls(design=quick_teacher_design(), eval_size=16)

    @classmethod
    def full(cls) -> "FlawedTeacher":
        """3 SFT seeds x 3 RL seeds."""
        return cls(design=teacher_design(sft_seeds=3, rl_seeds=3))


def evaluate(model, rows: list[dict], d: Design) -> dict[str, np.ndarray]:
    """Per problem: correct (0/1), affected (0/1), affected steps reached and written wrong."""
    tok, flaw = char_tokenizer(), Flaw()
    texts = greedy_texts(model, Encoder(tok, 256, d.max_new_tokens + 1), rows, sampler=make_sampler("static", tok),
                         max_new_tokens=d.max_new_tokens)
    steps = [affected_step_errors(r["prompt"], t, flaw) for r, t in zip(rows, texts)]
    return {"correct": np.array([extract_answer(t) == r["answer"] for r, t in zip(rows, texts)], dtype=np.float64),
            "affected": np.array([flaw.affected(parse_problem(r["prompt"])) for r in rows], dtype=bool),
            "reached": np.array([s[0] for s in steps], dtype=np.float64), "wrong": np.array([s[1] for s in steps], dtype=np.float64)}


def _runs(size: FlawedTeacher, data: dict, out: str) -> dict:
    """Every run's per-problem evaluation, ``{(arm, split): [runs]}`` (the start counted once per RL seed)."""
    d, found = size.design, {}
    rows = {sp: data[sp][: size.eval_size] for sp in SPLITS}
    for sft_seed in range(d.sft_seeds):
        base, _ = start(d, sft_seed, data, os.path.join(out, "starts"))
        start_eval = {sp: evaluate(base, rows[sp], d) for sp in SPLITS}
        for rl_seed in range(d.rl_seeds):
            seed = 1000 * sft_seed + rl_seed
            for sp in SPLITS:
                found.setdefault(("start", sp), []).append(start_eval[sp])
            pool, _ = collect_pool(base, data, d, seed)
            for arm in ARMS:
                model, _ = train_arm(arm, base, data, d, size.lr, seed, pool=pool if arm == "rft" else None,
                                     out_dir=os.path.join(out, f"{arm}-{sft_seed}-{rl_seed}"), checkpoint_every=0)
                for sp in SPLITS:
                    found.setdefault((arm, sp), []).append(evaluate(model, rows[sp], d))
    return found


def run(out: str, size: FlawedTeacher) -> str:
    """Train and evaluate every arm into ``out``; returns the results table (Markdown)."""
    data = build_data(size.design)
    found = _runs(size, data, out)
    arms = ("start", *ARMS)
    record = {"accuracy": {}, "affected_step_error": {}, "minus_control_points": {}, "runs": len(found["start", "eval_in"]),
              "problems": {sp: int(len(found["start", sp][0]["correct"])) for sp in SPLITS}, "settings": dataclasses.asdict(size),
              "environment": environment()}
    for arm in arms:
        for sp in SPLITS:
            runs = found[arm, sp]
            record["accuracy"][f"{arm}|{sp}"] = stratum_accuracy(runs)
            record["affected_step_error"][f"{arm}|{sp}"] = step_error(runs)
            if arm != "control":
                record["minus_control_points"][f"{arm}|{sp}"] = {k: stratum_difference(found["control", sp], runs, m)
                                                                 for k, m in strata(runs).items()}
    np.savez(os.path.join(out, "scores.npz"), **{f"{a}|{sp}|{k}": np.stack([r[k] for r in found[a, sp]]) for a in arms for sp in SPLITS
                                                 for k in ("correct", "affected", "reached", "wrong")})
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record, f, indent=2, default=str)
    _plot(record, arms, os.path.join(out, "flawed_teacher.png"))
    return _table(record, arms)


def _plot(record: dict, arms: tuple, path: str) -> None:
    """Accuracy on affected (solid) and unaffected (hatched) problems per arm, one panel per split."""
    from ..plots import figure

    fig, axes = figure(12, 3.6, ncols=len(SPLITS))
    for ax, sp in zip(axes, SPLITS):
        for k, stratum in enumerate(("affected", "unaffected")):
            ax.bar([i + 0.4 * k for i in range(len(arms))], [record["accuracy"][f"{a}|{sp}"][stratum] for a in arms], width=0.4,
                   hatch="" if k == 0 else "//", alpha=0.9 if k == 0 else 0.5, label=stratum)
        ax.set_xticks([i + 0.2 for i in range(len(arms))], [ARM_NAMES.get(a, a).split(" (")[0] for a in arms], rotation=35, ha="right", fontsize=7)
        ax.set_title(SPLITS[sp], fontsize=9)
    axes[0].set_ylabel("greedy accuracy (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def strata(runs: list) -> dict[str, np.ndarray]:
    """The problems with an affected step and without, as masks (the same problems in every run)."""
    aff = runs[0]["affected"]
    return {"affected": aff, "unaffected": ~aff}


def stratum_accuracy(runs: list) -> dict[str, float]:
    """Greedy accuracy (%) over runs on the affected and on the unaffected problems."""
    return {k: 100 * float(np.mean([r["correct"][m] for r in runs])) for k, m in strata(runs).items()}


def step_error(runs: list) -> float:
    """The error rate (%) on the affected steps the model reached with every earlier step right, pooled over runs."""
    return 100 * float(sum(r["wrong"].sum() for r in runs) / max(sum(r["reached"].sum() for r in runs), 1))


def stratum_difference(a_runs: list, b_runs: list, mask: np.ndarray) -> dict:
    """b - a (points) on the problems of ``mask``, paired per run: the bootstrap over problems, the t
    over runs (with several), and the verdict from the wider."""
    a, b = np.stack([r["correct"][mask] for r in a_runs]), np.stack([r["correct"][mask] for r in b_runs])
    problems = [100 * x for x in paired_difference(a, b)]
    runs = [100 * x for x in run_level_difference(a, b)] if len(a) > 1 else None
    chosen = problems if runs is None or problems[2] - problems[1] >= runs[2] - runs[1] else runs  # verdict_interval's rule: the wider
    return {"problems": problems, "runs": runs, "verdict": verdict(chosen)}


def _table(record: dict, arms: tuple) -> str:
    acc, err, diff = record["accuracy"], record["affected_step_error"], record["minus_control_points"]
    head = " | ".join(f"{SPLITS[sp]} affected / unaffected" for sp in SPLITS)
    lines = [f"Greedy accuracy (%) on fresh problems, affected (a step the teacher gets wrong) / unaffected; {record['runs']} run(s).",
             "", f"| arm | {head} | error on affected steps reached (%), {' / '.join(SPLITS.values())} |", "|---|---|---|---|---|"]
    for arm in arms:
        cells = [f"{acc[arm + '|' + sp]['affected']:.1f} / {acc[arm + '|' + sp]['unaffected']:.1f}" for sp in SPLITS]
        errors = " / ".join(f"{err[arm + '|' + sp]:.1f}" for sp in SPLITS)
        lines.append(f"| {ARM_NAMES.get(arm, arm)} | {' | '.join(cells)} | {errors} |")
    lines += ["", "Arm - control (points; 95% interval over problems" + (", and over runs" if record["runs"] > 1 else "") +
              "), affected problems; the verdict reads the wider interval:", "", "| arm | " + " | ".join(SPLITS.values()) + " |", "|---|---|---|---|"]
    for arm in arms:
        if arm == "control":
            continue
        cells = []
        for sp in SPLITS:
            d = diff[f"{arm}|{sp}"]["affected"]
            m, lo, hi = d["problems"]
            runs = f", runs [{d['runs'][1]:+.1f}, {d['runs'][2]:+.1f}]" if d["runs"] else ""
            cells.append(f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]{runs}: {d['verdict'].split(' (')[0]}")
        lines.append(f"| {ARM_NAMES.get(arm, arm)} | {' | '.join(cells)} |")
    lines += ["", f"Problems per split: {', '.join(f'{SPLITS[sp]} {n}' for sp, n in record['problems'].items())}. "
              f"Intervals reported: {2 * 3 * (len(arms) - 1)} (affected and unaffected, 3 splits, {len(arms) - 1} comparisons); "
              "the unaffected ones are in results.json."]
    return "\n".join(lines)
