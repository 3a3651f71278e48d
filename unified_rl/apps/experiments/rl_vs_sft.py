"""``unified-rl experiment rl-vs-sft``: can RL beat more supervised data, on a task designed so that
it honestly could (``tasks.splits.ChainSplits``)? From an SFT start trained to convergence on short
worked solutions, GRPO on longer answers-only questions against the SFT-continuation control (the
same number of updates on the worked solutions), both from the same start; several SFT seeds x RL
seeds; greedy accuracy on 4,096 fresh problems of the RL length and 4,096 harder ones; paired
differences with 95% bootstrap intervals over seeds and problems (``unified_rl.accuracy_stats``).

The SFT starts are saved (safetensors with a JSON record: settings, digest, machine, versions) and
reused by later runs with the same settings, so a second machine can start from the same weights.
"""

import copy
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..progress import bars
from ... import methods, threads
from ...config import TrainConfig
from ...data import Encoder
from ...evaluate import greedy_correct
from ...hf import make_sampler, tiny_llama
from ...loop import Trainer
from ...accuracy_stats import paired_difference
from ..machine_record import environment, file_sha256, measured_on
from ..plots import figure
from ..tasks import char_tokenizer, extract_answer, parse_problem, task_reward
from ..tasks.splits import ChainSplits


@dataclass
class RLvsSFT:
    """Sizes and settings (the defaults take about 20-30 minutes on 2 CPU cores)."""

    splits: ChainSplits = field(default_factory=ChainSplits)
    sft_steps: int = 1000             # cosine-decayed; the checkpoint with the best validation accuracy is the start
    sft_batch: int = 64
    sft_lr: float = 1e-3
    sft_check_every: int = 100
    rl_steps: int = 100
    questions_per_step: int = 16
    group_size: int = 8
    rl_lr: float = 1e-4               # GRPO's and the control's
    beta: float = 0.04
    epsilon: float = 0.2
    control_batch: int = 64           # worked solutions per control step
    max_new_tokens: int = 64          # a 6-step solution is at most 53 characters and eos
    sft_seeds: int = 2
    rl_seeds: int = 2

    @classmethod
    def quick(cls) -> "RLvsSFT":
        """A CI-sized run (no claim)."""
        return cls(splits=ChainSplits(sft_size=64, validation_size=32, rl_size=64, eval_size=32), sft_steps=6, sft_batch=8, sft_check_every=3,
                   rl_steps=2, questions_per_step=2, group_size=2, control_batch=4, sft_seeds=1, rl_seeds=2)

    @classmethod
    def long(cls) -> "RLvsSFT":
        """``rl-vs-sft-long``: 200 worked 4-step solutions among the SFT data (``ChainSplits.sft_long_size``);
        a probe of one SFT seed x one RL seed, not a claim."""
        return cls(splits=ChainSplits(sft_long_size=200), sft_seeds=1, rl_seeds=1)

    @classmethod
    def long_quick(cls) -> "RLvsSFT":
        """A CI-sized ``rl-vs-sft-long`` (no claim)."""
        size = cls.quick()
        return dataclasses.replace(size, splits=dataclasses.replace(size.splits, sft_long_size=8))


def _sft_settings(size: RLvsSFT, seed: int) -> dict:
    splits = dataclasses.asdict(size.splits)
    if not size.splits.sft_long_size:  # without longer worked solutions: the settings (and saved starts) of before that option
        splits = {k: v for k, v in splits.items() if not k.startswith("sft_long")}
    if not size.splits.teacher_share:  # a true teacher: the settings (and saved starts) of before the flawed one
        splits = {k: v for k, v in splits.items() if k not in ("teacher_share", "fresh_size")}
    return {"splits": splits, "sft_steps": size.sft_steps, "sft_batch": size.sft_batch, "sft_lr": size.sft_lr,
            "sft_check_every": size.sft_check_every, "max_new_tokens": size.max_new_tokens, "seed": seed}


SHIPPED_STARTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tasks", "starts")


def start_file(size: RLvsSFT, seed: int, starts_dir: str) -> str:
    """Where the SFT start of ``seed`` made with ``size``'s settings is saved: named by their digest."""
    key = hashlib.sha256(json.dumps(_sft_settings(size, seed), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(starts_dir, f"rl-vs-sft-{key}.safetensors")


def sft_start(size: RLvsSFT, seed: int, splits: dict, starts_dir: str):
    """The SFT start of ``seed``: loaded when ``starts_dir`` (or the package's ``tasks/starts``) holds
    one made with these settings, else trained (cosine schedule, best validation checkpoint) and saved there with its record."""
    from safetensors.torch import load_file, save_file

    settings = _sft_settings(size, seed)
    path = start_file(size, seed, starts_dir)
    if not os.path.exists(path) and os.path.exists(start_file(size, seed, SHIPPED_STARTS)):
        path = start_file(size, seed, SHIPPED_STARTS)  # the package ships the demo's (seed 0 of the figures' design)
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=seed)
    if os.path.exists(path):
        model.load_state_dict(load_file(path), strict=True)
        with open(path.replace(".safetensors", ".json")) as f:
            return model, json.load(f)
    torch.manual_seed(seed)
    cfg = TrainConfig(steps=size.sft_steps, questions_per_step=size.sft_batch, lr=size.sft_lr, schedule="cosine",
                      warmup_steps=min(20, size.sft_steps // 5), max_new_tokens=size.max_new_tokens, seed=seed)
    sft = Trainer(model, tok, methods.sft(), splits["sft"], cfg, phase="sft", adapt_threads=threads.per_step())
    best, best_step, best_state, curve = -1.0, 0, None, []
    while sft.step_count < size.sft_steps:
        for _ in range(min(size.sft_check_every, size.sft_steps - sft.step_count)):
            sft.train_step()
        accuracy = _accuracy(model, tok, splits["validation"], size)
        curve.append({"step": sft.step_count, "validation_accuracy": accuracy})
        if bars():
            print(f"  SFT seed {seed}: step {sft.step_count}, validation accuracy {accuracy:.1%}", flush=True)
        if accuracy > best:
            best, best_step, best_state = accuracy, sft.step_count, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    os.makedirs(starts_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in best_state.items()}, path)
    digest = file_sha256(path)
    record = {"settings": settings, "sha256": digest, "chosen_step": best_step, "validation_accuracy": best, "curve": curve,
              "environment": environment()}
    with open(path.replace(".safetensors", ".json"), "w") as f:
        json.dump(record, f, indent=1)
    return model, record


def _correct(model, tok, rows, size: RLvsSFT) -> np.ndarray:
    sampler = make_sampler("static", tok)
    return np.array(greedy_correct(model, Encoder(tok, 256, size.max_new_tokens + 1), rows, sampler=sampler, extract=extract_answer,
                                   max_new_tokens=size.max_new_tokens), dtype=np.float64)


def _accuracy(model, tok, rows, size: RLvsSFT) -> float:
    return float(_correct(model, tok, rows, size).mean())


def _grpo(start, tok, splits, size: RLvsSFT, seed: int):
    model = copy.deepcopy(start)
    cfg = TrainConfig(steps=size.rl_steps, questions_per_step=size.questions_per_step, lr=size.rl_lr,
                      warmup_steps=min(10, size.rl_steps // 2), max_new_tokens=size.max_new_tokens, seed=seed)
    method = methods.grpo(size.beta, size.epsilon, group_size=size.group_size)
    history = Trainer(model, tok, method, splits["rl"], cfg, reward=task_reward(method, tok), phase="grpo", adapt_threads=threads.per_step()).run(progress=bars())
    return model, history


def _control(start, tok, splits, size: RLvsSFT, seed: int):
    """SFT continued for as many updates as GRPO takes, on the only worked solutions there are."""
    model = copy.deepcopy(start)
    cfg = TrainConfig(steps=size.rl_steps, questions_per_step=size.control_batch, lr=size.rl_lr,
                      warmup_steps=min(10, size.rl_steps // 2), max_new_tokens=size.max_new_tokens, seed=seed)
    history = Trainer(model, tok, methods.sft(), splits["sft"], cfg, phase="sft_control", adapt_threads=threads.per_step()).run(progress=bars())
    return model, history


def run(out: str, size: RLvsSFT, starts_dir: Optional[str] = None) -> str:
    """Run the experiment into ``out``; returns its results Markdown."""
    t0 = time.perf_counter()
    splits = size.splits.build()
    tok = char_tokenizer()
    starts_dir = starts_dir or os.path.join(os.path.dirname(os.path.abspath(out)), "starts")
    arms = ("start", "control", "grpo")
    scores = {(arm, split): [] for arm in arms for split in ("eval_in", "eval_hard")}  # lists of [problems] per (sft seed, rl seed)
    log, starts = [], []
    for sft_seed in range(size.sft_seeds):
        start, record = sft_start(size, sft_seed, splits, starts_dir)
        starts.append({"seed": sft_seed, "sha256": record["sha256"], "chosen_step": record["chosen_step"],
                       "validation_accuracy": record["validation_accuracy"]})
        at_start = {split: _correct(start, tok, splits[split], size) for split in ("eval_in", "eval_hard")}
        for rl_seed in range(size.rl_seeds):
            trained = {"start": start}
            trained["grpo"], hist = _grpo(start, tok, splits, size, 1000 * sft_seed + rl_seed)
            log += [{**m, "sft_seed": sft_seed, "rl_seed": rl_seed} for m in hist]
            trained["control"], hist = _control(start, tok, splits, size, 1000 * sft_seed + rl_seed)
            log += [{**m, "sft_seed": sft_seed, "rl_seed": rl_seed} for m in hist]
            for split in ("eval_in", "eval_hard"):
                scores["start", split].append(at_start[split])
                for arm in ("control", "grpo"):
                    scores[arm, split].append(_correct(trained[arm], tok, splits[split], size))
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for m in log:
            f.write(json.dumps(m) + "\n")
    return _report(out, size, scores, starts, time.perf_counter() - t0, splits, log)


def by_length(rows: list[dict]) -> dict[int, list[int]]:
    """Problem indices of ``rows`` by number of operations, shortest first."""
    out: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(len(parse_problem(r["prompt"]).ops), []).append(i)
    return dict(sorted(out.items()))


def cell(diff: tuple) -> str:
    """A difference and its interval, in points: ``+1.2 [-0.3, +2.7]``."""
    d, lo, hi = diff
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _report(out: str, size: RLvsSFT, scores: dict, starts: list, seconds: float, splits: dict, log: list) -> str:
    lengths = {split: by_length(splits[split]) for split in ("eval_in", "eval_hard")}
    s = size.splits
    names = {"eval_in": f"{s.rl_steps[0]}-{s.rl_steps[1]} steps (the RL length)", "eval_hard": f"{s.hard_steps[0]}-{s.hard_steps[1]} steps (harder)"}
    runs = size.sft_seeds * size.rl_seeds
    lines = [f"{size.sft_seeds} SFT seeds x {size.rl_seeds} RL seeds = {runs} paired runs; greedy accuracy on {s.eval_size} fresh problems "
             f"per split; differences paired over the same starts, seeds and problems, with 95% bootstrap intervals over runs and problems.",
             "", "| split | SFT start | SFT continuation (control) | GRPO | GRPO - control [95% CI] | GRPO - start [95% CI] | control - start [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    results = {}
    for split in ("eval_in", "eval_hard"):
        a = {arm: np.stack(scores[arm, split]) for arm in ("start", "control", "grpo")}
        diffs = {pair: paired_difference(a[pair[0]], a[pair[1]]) for pair in (("control", "grpo"), ("start", "grpo"), ("start", "control"))}
        results[split] = {"accuracy": {arm: float(v.mean()) for arm, v in a.items()},
                          "difference": {f"{b}-{a_}": list(d) for (a_, b), d in diffs.items()}}
        cells = " | ".join(cell(d) for d in diffs.values())
        lines.append(f"| {names[split]} | {100 * a['start'].mean():.1f} | {100 * a['control'].mean():.1f} | {100 * a['grpo'].mean():.1f} | {cells} |")
    lines += ["", "By chain length (accuracy %, mean over runs; the split and its problems of that length in parentheses):", "",
              "| operations | " + " | ".join(("SFT start", "SFT continuation", "GRPO")) + " |", "|---|---|---|---|"]
    for split in ("eval_in", "eval_hard"):
        for ops, idx in sorted(lengths[split].items()):
            cells = " | ".join(f"{100 * np.stack(scores[arm, split])[:, idx].mean():.1f}" for arm in ("start", "control", "grpo"))
            lines.append(f"| {ops} ({names[split].split(' ')[0]} split, n = {len(idx)}) | {cells} |")
    signal = [m["reward/groups_with_signal"] for m in log if m.get("phase") == "grpo" and "reward/groups_with_signal" in m]
    if signal:
        lines += ["", f"GRPO groups with any reward signal (not all G rewards equal): {100 * float(np.mean(signal)):.1f}% on average "
                      f"over {len(signal)} steps; the others give no gradient."]
    env = environment()
    lines += ["", "SFT starts (saved and reused; sha256 prefix, checkpoint chosen on validation): "
              + "; ".join(f"seed {st['seed']}: {st['sha256'][:12]}, step {st['chosen_step']}, validation {100 * st['validation_accuracy']:.1f}%"
                          for st in starts),
              measured_on(env, seconds)]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"results": results, "starts": starts, "environment": env, "settings": dataclasses.asdict(size), "seconds": seconds}, f, indent=1)
    fig, ax = figure(6.5, 4)
    width = 0.25
    for i, arm in enumerate(("start", "control", "grpo")):
        ax.bar([k + (i - 1) * width for k in range(2)], [100 * results[sp]["accuracy"][arm] for sp in ("eval_in", "eval_hard")], width,
               label={"start": "SFT start", "control": "SFT continuation", "grpo": "GRPO"}[arm])
    ax.set_xticks(range(2), [names["eval_in"], names["eval_hard"]])
    ax.set(ylabel="held-out greedy accuracy (%)", title=f"GRPO vs more SFT from a converged start ({runs} paired runs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "rl_vs_sft.png"), dpi=110)
    return "\n".join(lines)
