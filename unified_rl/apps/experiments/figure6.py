"""``unified-rl experiment figure6``: DeepSeekMath's Figure 6 (iterative RL with a reward model) on
the RL-vs-SFT design (``design.py``).

* **The reward model** is the product (``rewards.Product``) of two models trained on the same
  ``rm_samples`` samples of the start on RL questions (``rm_group_size`` per question: 1, so as
  many distinct questions as labels), labelled by the rule (answer correct):

  - a sequence classifier initialised from the SFT start's trunk (``hf.reward_model_from_policy``,
    ``rm_epochs``), which learns mostly the chain's length (about 85% alone);
  - a generative verifier (``rewards.VerifierReward``): a copy of the start trained as a language
    model on the samples labelled correct (``verifier_epochs``), accepting a sample when every
    token is its own greedy choice, so it checks each step's arithmetic (the pair
    reaches 90% and more held out where each alone stays near 80-85%).

  Its accuracy (score > 0.5) is measured on ``rm_heldout`` more such samples, beside each part's
  alone, the base rate of the majority label and a predictor that sees only the chain's length, and
  logged on the policy's own samples at every RL update (``reward_model/policy_accuracy``).
* **Iterative** (Algorithm 1): ``iterations`` iterations; at each, the reference is reset to the
  policy and the reward model is trained on the policy's samples of the last iteration, labelled by
  the rule, with 10% replay. **Non-iterative**: the same number of updates with one reward model and
  the reference fixed. Its reward model is trained on as many rule labels in total as the
  iterative one sees (all of them samples of the start), so the comparison is iterative vs not
  with the same labels.
* Greedy accuracy on fresh problems; paired differences with 95% bootstrap intervals; the
  SFT-continuation control beside them.
"""

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..progress import bars
from ...hf import reward_model_from_policy
from ...rewards import ModelReward, OutcomeReward, Product, VerifierReward
from ...accuracy_stats import paired_difference
from .design import (Design, build_data, chain_length, cell, correct, labelled_samples, seeds_line, start, TeacherVariants,
                     train_arm, verdict)
from ..machine_record import environment, measured_on
from ..plots import figure
from ..tasks import char_tokenizer, extract_answer

SPLITS = ("eval_in", "eval_hard")
RUNS = ("control", "non_iterative", "iterative")
NAMES = {"start": "SFT start", "control": "SFT continuation (control)", "non_iterative": "GRPO + RM, non-iterative",
         "iterative": "GRPO + RM, iterative"}


@dataclass
class Figure6(TeacherVariants):
    """Sizes (defaults: 24-26 minutes on 2 cores with the saved starts)."""

    design: Design = field(default_factory=Design)
    lr: float = 1e-4
    iterations: int = 3
    rm_samples: int = 8192
    rm_heldout: int = 1024
    rm_epochs: int = 1                # the reward-model probe: held-out accuracy peaked after one epoch, then fell (over-fitting)
    rm_group_size: int = 1            # the RM's labels: samples per question (1: as many distinct questions as labels)
    rm_lr: float = 1e-4
    verifier_epochs: int = 2          # passes over the correct samples, at the start and at each re-training
    verifier_lr: float = 3e-4
    verifier_temperature: float = 0.5  # r = sigmoid(lowest token margin / temperature)
    replay: float = 0.1

    @classmethod
    def quick(cls) -> "Figure6":
        """A CI-sized run (no claim)."""
        return cls(design=Design.quick(), rm_samples=16, rm_heldout=8, rm_epochs=1, verifier_epochs=1)

    @property
    def steps_per_iteration(self) -> int:
        return max(1, self.design.steps // self.iterations)


def rm_accuracy(rm, samples) -> float:
    """The share of ``samples`` whose rule label (correct or not) the reward's score (``score_pairs`` > 0.5) agrees with."""
    scores = rm.score_pairs([(p, c) for p, c, _ in samples])
    return float(((scores > 0.5) == torch.tensor([y > 0.5 for _, _, y in samples])).float().mean())


def rm_data(base, data: dict, f: Figure6, n: int, seed: int) -> tuple[list, list]:
    """(held-out, training) rule-labelled samples of the frozen ``base`` on RL questions: ``f.rm_heldout``
    on the first ``f.rm_heldout`` questions and ``n`` on the others (the RL split has ~13,000
    questions, fewer than the samples drawn, so a shared pool would revisit held-out questions)."""
    d = f.design
    per_call = d.questions_per_step * d.group_size // f.rm_group_size  # questions per sampling call: as many samples as an RL step
    rm_design = dataclasses.replace(d, group_size=f.rm_group_size, questions_per_step=per_call)
    return (labelled_samples(base, data["rl"][: f.rm_heldout], rm_design, f.rm_heldout, seed=seed),
            labelled_samples(base, data["rl"][f.rm_heldout:], rm_design, n, seed=seed))


def _reward_model(base, samples, f: Figure6, seed: int) -> Product:
    """The classifier x verifier reward model, trained on ``samples``."""
    torch.manual_seed(seed)
    tok, rule = char_tokenizer(), OutcomeReward(extract_answer)
    classifier = ModelReward(reward_model_from_policy(base), tok, labeler=rule, lr=f.rm_lr, seed=seed)
    verifier = VerifierReward(copy.deepcopy(base), tok, labeler=rule, lr=f.verifier_lr, seed=seed, update_epochs=f.verifier_epochs,
                              temperature=f.verifier_temperature)
    classifier.fit(samples, epochs=f.rm_epochs)
    verifier.fit(samples, epochs=f.verifier_epochs)
    for part in (classifier, verifier):
        part.history.extend(samples)  # the replay pool of continual training starts with them
    return Product([classifier, verifier])


def policy_data(data: dict, f: "Figure6") -> dict:
    """The splits the policy trains on: the RL questions without the reward model's held-out ones, so
    its held-out accuracy is measured on questions RL never saw (strictly disjoint)."""
    held_out = {r["prompt"] for r in data["rl"][: f.rm_heldout]}
    return {**data, "rl": [r for r in data["rl"][f.rm_heldout:] if r["prompt"] not in held_out]}


def run(out: str, f: Figure6, starts_dir: Optional[str] = None) -> str:
    """Run the experiment into ``out`` (starts in ``starts_dir``, default ``out/../starts``); returns its results Markdown."""
    t0 = time.perf_counter()
    d = f.design
    data = build_data(d)
    starts_dir = starts_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "starts")
    k = f.steps_per_iteration
    new_labels = (f.iterations - 1) * k * d.questions_per_step * d.group_size  # what the iterative run's RM is trained on later
    scores = {(x, sp): [] for x in ("start", *RUNS) for sp in SPLITS}
    rms, policy_acc, curves, log, starts = [], {x: [] for x in RUNS[1:]}, {x: [] for x in RUNS[1:]}, [], []
    for sft_seed in range(d.sft_seeds):
        base, record = start(d, sft_seed, data, starts_dir)
        starts.append({"seed": sft_seed, "sha256": record["sha256"]})
        at_start = {sp: correct(base, data[sp], d) for sp in SPLITS}
        heldout, train = rm_data(base, data, f, f.rm_samples + new_labels, seed=7 + sft_seed)
        rm_iter = _reward_model(base, train[: f.rm_samples], f, seed=sft_seed)
        rm_once = _reward_model(base, train, f, seed=sft_seed)
        rate = float(np.mean([y > 0.5 for _, _, y in heldout]))
        by_ops = {}  # the best predictor that sees only the chain's length: each length's majority label in the training labels
        for p, _, y in train:
            by_ops.setdefault(chain_length(p), []).append(y > 0.5)
        majority = {k: np.mean(v) > 0.5 for k, v in by_ops.items()}
        length_only = float(np.mean([majority.get(chain_length(p), rate > 0.5) == (y > 0.5) for p, _, y in heldout]))
        rms.append({"sft_seed": sft_seed, "heldout_accuracy_iterative_start": rm_accuracy(rm_iter, heldout),
                    "heldout_accuracy_non_iterative": rm_accuracy(rm_once, heldout),
                    **{f"heldout_accuracy_{part}_{name}": rm_accuracy(rm.parts[i], heldout) for name, rm in (("iterative_start", rm_iter), ("non_iterative", rm_once))
                       for i, part in enumerate(("classifier", "verifier"))},
                    "heldout_correct_rate": rate, "heldout_length_only_accuracy": length_only,
                    "labels_iterative_start": f.rm_samples, "labels_non_iterative": len(train)})
        if bars():
            print(f"  reward models, SFT seed {sft_seed}: held-out accuracy {rms[-1]}", flush=True)
        for rl_seed in range(d.rl_seeds):
            seed = 1000 * sft_seed + rl_seed
            trained = {"control": train_arm("control", base, data, d, f.lr, seed)[0]}
            for name, rm, iterations in (("non_iterative", rm_once, 1), ("iterative", rm_iter, f.iterations)):
                dd = copy.deepcopy(d)
                dd.steps = d.steps if iterations == 1 else k
                used = copy.deepcopy(rm)
                model, hist = train_arm("grpo", base, policy_data(data, f), dd, f.lr, seed, reward=used, iterations=iterations,
                                        reward_replay=f.replay)
                trained[name] = model
                if iterations > 1:  # the re-trained reward model of the last iteration, on the same held-out samples of the start
                    for key, part in (("", used), ("_classifier", used.parts[0]), ("_verifier", used.parts[1])):
                        rms[-1].setdefault(f"heldout_accuracy{key}_iterative_last", []).append(rm_accuracy(part, heldout))
                log += [{**m, "run": name, "sft_seed": sft_seed, "rl_seed": rl_seed} for m in hist]
                policy_acc[name].append([m.get("reward_model/policy_accuracy", np.nan) for m in hist])
                curves[name].append([m.get("reward/mean", np.nan) for m in hist])
            for sp in SPLITS:
                scores["start", sp].append(at_start[sp])
                for name in RUNS:
                    scores[name, sp].append(correct(trained[name], data[sp], d))
    with open(os.path.join(out, "metrics.jsonl"), "w") as fh:
        for m in log:
            fh.write(json.dumps(m) + "\n")
    return _report(out, f, data, scores, rms, policy_acc, starts, time.perf_counter() - t0)


def _report(out, f: Figure6, data, scores, rms, policy_acc, starts, seconds) -> str:
    d = f.design
    a = {key: np.stack(v) for key, v in scores.items()}
    cols = ("start", *RUNS)
    names = {"eval_in": f"{d.rl_ops[0]}-{d.rl_ops[1]} steps (n = {len(data['eval_in'])})", "eval_hard": f"5-6 steps (n = {len(data['eval_hard'])})"}
    lines = [seeds_line(d) + f"; GRPO lr {f.lr:g}, {d.steps} updates ({f.iterations} iterations of {f.steps_per_iteration} for the iterative run).",
             "", "Held-out accuracy (%) of the reward model (classifier x verifier) and of each part alone:", "",
             "| reward model (SFT seed) | rule labels trained on | held-out accuracy | classifier alone | verifier alone "
             "| held-out base rate (majority label) | a predictor that sees only the chain's length |", "|---|---|---|---|---|---|---|"]
    for r in rms:
        base_rate = max(r["heldout_correct_rate"], 1 - r["heldout_correct_rate"])
        rest = f"| {100 * base_rate:.1f} | {100 * r['heldout_length_only_accuracy']:.1f} |"
        for name, label, n in (("iterative_start", "iterative's first", r["labels_iterative_start"]), ("non_iterative", "non-iterative", r["labels_non_iterative"])):
            parts = " | ".join(f"{100 * r[f'heldout_accuracy_{part}_{name}']:.1f}" for part in ("classifier", "verifier"))
            lines.append(f"| {label} ({r['sft_seed']}) | {n} | {100 * r[f'heldout_accuracy_{name}']:.1f} | {parts} " + rest)
        if "heldout_accuracy_iterative_last" in r:  # one per RL seed: their mean
            last = " | ".join(f"{100 * np.mean(r[f'heldout_accuracy{key}_iterative_last']):.1f}" for key in ("", "_classifier", "_verifier"))
            lines.append(f"| iterative's last, re-trained on policy samples ({r['sft_seed']}; mean of {len(r['heldout_accuracy_iterative_last'])} RL seeds) "
                         f"| {r['labels_non_iterative']} | {last} " + rest)
    lines += ["", "Reward-model accuracy on the policy's own samples during RL (mean over runs; first and last 10 updates):", "",
              "| run | first 10 updates | last 10 updates |", "|---|---|---|"]
    for name, accs in policy_acc.items():
        acc = np.array(accs, dtype=np.float64)
        lines.append(f"| {NAMES[name]} | {100 * np.nanmean(acc[:, :10]):.1f} | {100 * np.nanmean(acc[:, -10:]):.1f} |")
    lines += ["", "Greedy accuracy (%), mean over runs:", "", "| split | " + " | ".join(NAMES[x] for x in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for sp in SPLITS:
        lines.append(f"| {names[sp]} | " + " | ".join(f"{100 * a[x, sp].mean():.1f}" for x in cols) + " |")
    diffs = {(x, y, sp): paired_difference(a[x, sp], a[y, sp]) for x, y in (("non_iterative", "iterative"), ("control", "iterative"),
                                                                             ("start", "non_iterative")) for sp in SPLITS}
    main = diffs["non_iterative", "iterative", "eval_in"]
    lines += ["", "| comparison | " + " | ".join(names[sp] for sp in SPLITS) + " |", "|---|---|---|"]
    for x, y in (("non_iterative", "iterative"), ("control", "iterative"), ("start", "non_iterative")):
        lines.append(f"| {NAMES[y]} - {NAMES[x]} | " + " | ".join(cell(diffs[x, y, sp]) for sp in SPLITS) + " |")
    lines += ["", f"| paper claim | difference [95% CI] ({names['eval_in']}) | verdict |", "|---|---|---|",
              f"| iterative RL beats non-iterative RL with a reward model | {cell(main)} | {verdict(main)} |"]
    env = environment()
    lines += ["", "SFT starts: " + "; ".join(f"seed {s['seed']}: {s['sha256'][:12]}" for s in starts),
              measured_on(env, seconds)]
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump({"reward_models": rms, "accuracy": {f"{x}/{sp}": float(a[x, sp].mean()) for x in cols for sp in SPLITS},
                   "iterative_minus_non_iterative": {sp: list(diffs["non_iterative", "iterative", sp]) for sp in SPLITS},
                   "verdict": verdict(main), "starts": starts, "environment": env, "seconds": seconds}, fh, indent=1)
    np.savez_compressed(os.path.join(out, "scores.npz"), **{f"{x}/{sp}": a[x, sp] for x in cols for sp in SPLITS})  # [runs, problems] 0/1
    fig, (left, right) = figure(11, 4, ncols=2)
    for name, accs in policy_acc.items():
        acc = 100 * np.nanmean(np.array(accs, dtype=np.float64), axis=0)
        left.plot(range(1, len(acc) + 1), acc, label=NAMES[name])
    left.set(xlabel="update", ylabel="agreement with the rule (%)", title="reward model on the policy's samples")
    left.legend(fontsize=8)
    for i, sp in enumerate(SPLITS):
        right.bar([j + (i - 0.5) * 0.4 for j in range(len(cols))], [100 * a[x, sp].mean() for x in cols], 0.4, label=sp)
    right.set_xticks(range(len(cols)), [NAMES[x].replace("GRPO + RM, ", "") for x in cols], rotation=20, fontsize=8)
    right.set(ylabel="held-out greedy accuracy (%)", title="fresh problems")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figure6.png"), dpi=110)
    return "\n".join(lines)
