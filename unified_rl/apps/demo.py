"""The demo on the embedded default: SFT a ~0.86M-parameter Llama on the arithmetic task, then
GRPO it; greedy accuracy on 256 held-out problems before and after; metrics and a plot.

The SFT start is shipped (``tasks/demo_sft_start.safetensors`` with its SFT metrics): floating-point
results differ between CPUs, and 300 SFT steps amplify that into different starts (49% on one Intel
Xeon, 62% on an AMD EPYC), so the demo starts every machine from the same weights.
``unified-rl demo --sft-from-scratch`` trains the start instead, and ``python -m
unified_rl.apps.demo --write-start`` is how the shipped file was made (on an AMD EPYC).
"""

import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .. import methods
from ..config import TrainConfig
from ..hf import save_model, tiny_llama
from ..loop import Trainer
from .environment import cpu_model, file_sha256
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
    rl_seed: Optional[int] = None  # the RL phase's seed (sampling, data order); None: ``seed``

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


START = os.path.join(os.path.dirname(__file__), "tasks", "demo_sft_start.safetensors")
START_SFT_FIELDS = ("sft_steps", "sft_batch", "sft_lr", "eval_size", "max_new_tokens", "train_rows", "seed")


def shipped_start_fits(s: DemoSettings) -> bool:
    """Whether the shipped SFT start is what ``s``'s SFT phase trains (the default settings)."""
    return all(getattr(s, f) == getattr(DemoSettings(), f) for f in START_SFT_FIELDS) and os.path.exists(START)


def sft_start(s: DemoSettings, out_dir: Optional[str] = None, progress: bool = True, from_scratch: bool = False):
    """The demo's SFT phase: returns (model, tokenizer, train_rows, eval_rows, sft_trainer). With the
    default settings it loads the shipped start (and its SFT metrics) unless ``from_scratch``."""
    if not from_scratch and shipped_start_fits(s):
        return _shipped_start(s, out_dir)
    torch.manual_seed(s.seed)
    tok = char_tokenizer()
    task = ArithmeticTask(seed=s.seed)
    eval_rows = task.eval_rows(s.eval_size)
    train_rows = task.train_rows(s.train_rows, eval_size=s.eval_size)
    model = tiny_llama(len(tok), seed=s.seed)
    # Constant LR after warm-up: the SFT start is a checkpoint mid-training, not an annealed one
    # (see README: benchmarks/demo_control.py continues SFT from it for comparison).
    sft = _sft_trainer(s, model, tok, train_rows, eval_rows, out_dir)
    sft.run(progress=progress)
    return model, tok, train_rows, eval_rows, sft


def _sft_trainer(s: DemoSettings, model, tok, train_rows, eval_rows, out_dir: Optional[str]) -> Trainer:
    cfg = TrainConfig(method="sft", steps=s.sft_steps, questions_per_step=s.sft_batch, lr=s.sft_lr, warmup_steps=min(20, s.sft_steps // 5),
                      schedule="constant", max_new_tokens=s.max_new_tokens, eval_size=s.eval_size, out_dir=out_dir, seed=s.seed)
    return Trainer(model, tok, methods.sft(), train_rows, cfg, eval_rows=eval_rows, extract=extract_answer, phase="sft")


def _shipped_start(s: DemoSettings, out_dir: Optional[str]):
    """The shipped SFT start: weights (safetensors, never pickled) and the SFT phase's metrics."""
    from safetensors.torch import load_file

    tok = char_tokenizer()
    task = ArithmeticTask(seed=s.seed)
    eval_rows = task.eval_rows(s.eval_size)
    train_rows = task.train_rows(s.train_rows, eval_size=s.eval_size)
    model = tiny_llama(len(tok), seed=s.seed)
    model.load_state_dict(load_file(START), strict=True)
    sft = _sft_trainer(s, model, tok, train_rows, eval_rows, out_dir)
    with open(START.replace(".safetensors", ".json")) as f:
        sft.history = json.load(f)["history"]
    sft.step_count = s.sft_steps
    for m in sft.history:
        sft.log_metrics(m)
    return model, tok, train_rows, eval_rows, sft


def write_start() -> None:
    """Train the default SFT start from scratch and write it (weights and SFT metrics) as the shipped start."""
    from safetensors.torch import save_file

    s = DemoSettings()
    model, _, _, _, sft = sft_start(s, progress=True, from_scratch=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, START)
    with open(START.replace(".safetensors", ".json"), "w") as f:
        json.dump({"settings": {k: getattr(s, k) for k in START_SFT_FIELDS}, "sha256": file_sha256(START), "machine": _machine(),
                   "torch": torch.__version__, "accuracy": sft.evaluate(), "history": sft.history}, f, indent=1)
    print(f"wrote {START} ({file_sha256(START)[:12]}...)")


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def _stopped(history: list, model, tok, out_dir: str, phase: str, step: int, t0: float) -> dict:
    """Ctrl-C during the demo: keep what was done (metrics, plot, model) and say so."""
    write_metrics(history, out_dir)
    plot_training(history, os.path.join(out_dir, "plot.png"), title=f"demo, interrupted during {phase}")
    save_model(model, tok, os.path.join(out_dir, "model"))
    return {"interrupted": f"{phase} step {step}", "seconds_total": time.perf_counter() - t0}


def run_demo(out_dir: str = "runs/demo", settings: Optional[DemoSettings] = None, progress: bool = True, from_scratch: bool = False) -> dict:
    """Run the demo into ``out_dir`` and return its summary (accuracies, seconds, settings)."""
    s = settings or DemoSettings()
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "metrics.jsonl")):
        os.remove(os.path.join(out_dir, "metrics.jsonl"))
    shipped = not from_scratch and shipped_start_fits(s)
    model, tok, train_rows, eval_rows, sft = sft_start(s, out_dir, progress, from_scratch=from_scratch)
    if sft.interrupted:
        return _stopped(sft.history, model, tok, out_dir, "sft", sft.step_count, t0)
    n_params = sum(p.numel() for p in model.parameters())
    common = dict(max_new_tokens=s.max_new_tokens, eval_size=s.eval_size, out_dir=out_dir, seed=s.seed if s.rl_seed is None else s.rl_seed)
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
    save_model(model, tok, os.path.join(out_dir, "model"))
    summary = {"parameters": n_params, "accuracy_before": before, "accuracy_after": after, "gain_points": 100 * (after - before),
               "eval_problems": len(eval_rows), "seconds_sft": t_sft - t0, "seconds_grpo": t_end - t_sft, "seconds_total": t_end - t0,
               "threads": torch.get_num_threads(), "settings": dataclasses.asdict(s),
               "sft_start": f"shipped ({os.path.basename(START)}, sha256 {file_sha256(START)[:12]})" if shipped else "trained in this run"}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-start"]:
        sys.exit("usage: python -m unified_rl.apps.demo --write-start")
    write_start()
