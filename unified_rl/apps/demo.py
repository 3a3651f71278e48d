"""The demo on the embedded default: SFT a ~0.86M-parameter Llama on the arithmetic task, then
GRPO it; greedy accuracy on 256 held-out problems before and after; metrics and a plot."""

import csv
import json
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .. import methods
from ..config import TrainConfig
from ..hf import tiny_llama
from ..loop import Trainer
from .plots import plot_training
from .tasks import ArithmeticTask, char_tokenizer, extract_answer, task_reward


@dataclass
class DemoSettings:
    """Sizes of the SFT start and of the RL phase: the demo's, and the experiments' (``experiments.Size.run``)."""

    sft_steps: int = 300
    sft_batch: int = 64
    sft_lr: float = 1e-3
    grpo_steps: int = 100
    questions_per_step: int = 16
    group_size: int = 8
    grpo_lr: float = 3e-5
    grpo_warmup: int = 10
    beta: float = 0.04
    epsilon: float = 0.2
    eval_size: int = 256
    eval_every: int = 25
    max_new_tokens: int = 40
    train_rows: int = 20_000
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A small version for tests and CI (seconds, not minutes; no accuracy claim)."""
        return cls(sft_steps=20, sft_batch=16, grpo_steps=4, questions_per_step=4, group_size=4, eval_size=32, eval_every=2, train_rows=500)


def write_metrics(history: list[dict], out_dir: str) -> None:
    """Write the per-step metrics as ``metrics.csv``."""
    keys = sorted({k for m in history for k in m})
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def sft_start(s: DemoSettings, out_dir: Optional[str] = None, progress: bool = True):
    """The demo's SFT phase: returns (model, tokenizer, train_rows, eval_rows, sft_trainer)."""
    torch.manual_seed(s.seed)
    tok = char_tokenizer()
    task = ArithmeticTask(seed=s.seed)
    eval_rows = task.eval_rows(s.eval_size)
    train_rows = task.train_rows(s.train_rows, eval_size=s.eval_size)
    model = tiny_llama(len(tok), seed=s.seed)
    # Constant LR after warm-up: the SFT start is a checkpoint mid-training, not an annealed one
    # (see README: benchmarks/demo_control.py continues SFT from it for comparison).
    cfg = TrainConfig(method="sft", steps=s.sft_steps, questions_per_step=s.sft_batch, lr=s.sft_lr, warmup_steps=min(20, s.sft_steps // 5),
                      schedule="constant", max_new_tokens=s.max_new_tokens, eval_size=s.eval_size, out_dir=out_dir, seed=s.seed)
    sft = Trainer(model, tok, methods.sft(), train_rows, cfg, eval_rows=eval_rows, extract=extract_answer, phase="sft")
    sft.run(progress=progress)
    return model, tok, train_rows, eval_rows, sft


def _stopped(history: list, model, tok, out_dir: str, phase: str, step: int, t0: float) -> dict:
    """Ctrl-C during the demo: keep what was done (metrics, plot, model) and say so."""
    write_metrics(history, out_dir)
    plot_training(history, os.path.join(out_dir, "plot.png"), title=f"demo, interrupted during {phase}")
    model.save_pretrained(os.path.join(out_dir, "model"))
    tok.save_pretrained(os.path.join(out_dir, "model"))
    return {"interrupted": f"{phase} step {step}", "seconds_total": time.perf_counter() - t0}


def run_demo(out_dir: str = "runs/demo", settings: Optional[DemoSettings] = None, progress: bool = True) -> dict:
    """Run the demo into ``out_dir`` and return its summary (accuracies, seconds, settings)."""
    s = settings or DemoSettings()
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "metrics.jsonl")):
        os.remove(os.path.join(out_dir, "metrics.jsonl"))
    model, tok, train_rows, eval_rows, sft = sft_start(s, out_dir, progress)
    if sft.interrupted:
        return _stopped(sft.history, model, tok, out_dir, "sft", sft.step_count, t0)
    n_params = sum(p.numel() for p in model.parameters())
    common = dict(max_new_tokens=s.max_new_tokens, eval_size=s.eval_size, out_dir=out_dir, seed=s.seed)
    before = sft.evaluate()
    start = {"phase": "grpo", "step": 0, "eval/accuracy": before}
    sft.history.append(start)
    sft.log_metrics(start)
    t_sft = time.perf_counter()

    grpo_cfg = TrainConfig(method="grpo", steps=s.grpo_steps, questions_per_step=s.questions_per_step, group_size=s.group_size, lr=s.grpo_lr,
                           warmup_steps=min(s.grpo_warmup, s.grpo_steps // 2), beta=s.beta, epsilon=s.epsilon, eval_every=s.eval_every, **common)
    method = methods.grpo(beta=s.beta, epsilon=s.epsilon, group_size=s.group_size)
    grpo = Trainer(model, tok, method, train_rows, grpo_cfg, eval_rows=eval_rows, reward=task_reward(method, tok), extract=extract_answer,
                   phase="grpo")
    grpo.run(progress=progress)
    if grpo.interrupted:
        return _stopped(sft.history + grpo.history, model, tok, out_dir, "grpo", grpo.step_count, t0)
    after = grpo.history[-1]["eval/accuracy"] if "eval/accuracy" in grpo.history[-1] else grpo.evaluate()
    t_end = time.perf_counter()

    history = sft.history + grpo.history
    write_metrics(history, out_dir)
    plot_training(history, os.path.join(out_dir, "plot.png"), title=f"SFT then GRPO: held-out accuracy {before:.1%} -> {after:.1%}")
    model.save_pretrained(os.path.join(out_dir, "model"))
    tok.save_pretrained(os.path.join(out_dir, "model"))
    summary = {"parameters": n_params, "accuracy_before": before, "accuracy_after": after, "gain_points": 100 * (after - before),
               "eval_problems": len(eval_rows), "seconds_sft": t_sft - t0, "seconds_grpo": t_end - t_sft, "seconds_total": t_end - t0,
               "threads": torch.get_num_threads(), "settings": s.__dict__}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
