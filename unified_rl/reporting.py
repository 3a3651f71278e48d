"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard, Trackio or Weights & Biases
(``report_to``, comma-separated; whichever of them is installed), and a table of sample
completions every ``log_completions_every`` steps (also written to ``completions.jsonl``).

Each backend is imported only when asked for; one that is not installed is an error when the
Trainer is built, before any training.
"""

import importlib.util
import math
import os
from typing import Any, Optional, Protocol, Sequence

REPORTERS = ("tensorboard", "trackio", "wandb")
_INSTALL = {"tensorboard": "pip install tensorboard", "trackio": "pip install trackio", "wandb": "pip install wandb"}


class Reporter(Protocol):
    """A metrics backend: scalars per step, a table of completions now and then."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Numeric metrics of one step."""

    def table(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        """Sample completions (prompt, completion, reward) of one step."""

    def close(self) -> None:
        """Flush and finish the run."""


def parse_report_to(value: str) -> list[str]:
    """``"tensorboard,wandb"`` -> names, checked: known and installed (else a ValueError naming it)."""
    given = [n.strip().lower() for n in value.split(",") if n.strip()]
    names = [n for n in given if n != "none"]
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        raise ValueError(f"report_to: unknown backend {unknown[0]!r}; choose from {', '.join(REPORTERS)} (or none)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"report_to: {', '.join(twice)} named twice (every scalar would be logged twice)")
    if "none" in given and names:
        raise ValueError(f"report_to: 'none' beside {', '.join(names)}; give either none or the backends")
    for n in names:
        if importlib.util.find_spec(n) is None:  # each backend is the module of its name
            raise ValueError(f"report_to: {n} is not installed ({_INSTALL[n]})")
    return names


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}  # step: the x axis


def _markdown(rows: Sequence[dict]) -> str:
    cols = list(rows[0]) if rows else []
    esc = [[str(r.get(c, "")).replace("|", "\\|").replace("\n", "<br>") for c in cols] for r in rows]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in esc])


class TensorBoard:
    """``torch.utils.tensorboard`` event files in ``<out_dir>/tensorboard``; completions as a text table."""

    def __init__(self, out_dir: str, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(out_dir, "tensorboard"))
        self.writer.add_text("config", _markdown([{"field": k, "value": v} for k, v in config.items()]), 0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in _scalars(metrics).items():
            self.writer.add_scalar(k, v, step)

    def table(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        self.writer.add_text("completions", _markdown(rows), step)

    def close(self) -> None:
        self.writer.close()


class Trackio:
    """A local Trackio run (project ``unified_rl``; ``trackio show`` opens its dashboard)."""

    def __init__(self, out_dir: str, run_name: str, config: dict):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project="unified_rl", name=run_name, config=config)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.trackio.log(_scalars(metrics), step=step)

    def table(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        import pandas as pd

        self.trackio.log({"completions": self.trackio.Table(dataframe=pd.DataFrame(list(rows)))}, step=step)

    def close(self) -> None:
        self.trackio.finish()


class WandB:
    """A Weights & Biases run (its own settings apply: ``WANDB_MODE=offline`` keeps it local)."""

    def __init__(self, out_dir: str, run_name: str, config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="unified_rl", name=run_name, config=config, dir=out_dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(_scalars(metrics), step=step)

    def table(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        cols = list(rows[0]) if rows else []
        self.run.log({"completions": self.wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])}, step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoard, "trackio": Trackio, "wandb": WandB}


def make_reporters(report_to: str, out_dir: Optional[str], run_name: str, config: dict) -> list[Reporter]:
    """The reporters ``report_to`` names (see :func:`parse_report_to`); TensorBoard needs an ``out_dir``."""
    names = parse_report_to(report_to)
    if "tensorboard" in names and not out_dir:
        raise ValueError("report_to: tensorboard writes under out_dir; set out_dir (--out)")
    return [_CLASSES[n](out_dir or ".", run_name, config) for n in names]
