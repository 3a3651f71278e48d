"""Where a run's numbers go, in one place: the :class:`MetricLogger` protocol the Trainer writes
through, and :class:`RunLogger`, the default -- ``metrics.jsonl`` and ``completions.jsonl`` in the
run's folder plus ``report_to``'s backends (TensorBoard, Trackio, Weights & Biases).

A logger of your own is any object with ``log``, ``completions`` and ``close``
(``Trainer(..., logger=...)``); ``metrics.jsonl`` is the run's record and is written by
:class:`RunLogger` only, so a custom logger replaces the file as well as the backends.
"""

import json
import os
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from .reporting import Reporter, make_reporters


@runtime_checkable
class MetricLogger(Protocol):
    """Receives every step's metrics and, now and then, a table of sample completions."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """One step's metrics (numbers, plus ``phase``) -- the dict the Trainer returns from ``train_step``."""

    def completions(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        """Sample completions of one step: dicts with ``phase``, ``step``, ``prompt``, ``completion``, ``reward`` (None if unscored)."""

    def close(self) -> None:
        """The run is over (or paused): flush and finish."""


class RunLogger:
    """The default :class:`MetricLogger`: one JSON line per step in ``out_dir/metrics.jsonl``, the
    completions in ``out_dir/completions.jsonl`` (both only when ``out_dir`` is set) and the
    backends of ``report_to`` (started with the first numbers). On ranks other than 0 it does nothing."""

    def __init__(self, out_dir: Optional[str], report_to: str = "none", run_name: str = "run",
                 config: Optional[dict] = None, rank: int = 0):
        self.out_dir, self.report_to, self.run_name, self.config, self.rank = out_dir, report_to, run_name, config or {}, rank
        self._reporters: Optional[list[Reporter]] = None

    def reporters(self) -> list[Reporter]:
        """``report_to``'s backends, started on first use."""
        if self._reporters is None:
            self._reporters = make_reporters(self.report_to, self.out_dir, self.run_name, self.config)
        return self._reporters

    def _append(self, name: str, rows: Sequence[dict]) -> None:
        if self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, name), "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.rank > 0:
            return
        self._append("metrics.jsonl", [metrics])
        for r in self.reporters():
            r.log(metrics, step)

    def completions(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        if self.rank > 0:
            return
        self._append("completions.jsonl", rows)
        for r in self.reporters():
            r.table(rows, step)

    def close(self) -> None:
        for r in self._reporters or []:
            r.close()
        self._reporters = None


def _split_file(path: str, later, write: bool = True) -> list[dict]:
    """The lines of a JSON-lines file for which ``later`` is false. With ``write``, the file keeps
    only those (atomic rewrite) and the others are appended to ``<name>.superseded.jsonl`` beside it,
    so a resume loses no line."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    kept, dropped = [m for m in lines if not later(m)], [m for m in lines if later(m)]
    if write and dropped:
        with open(path.removesuffix(".jsonl") + ".superseded.jsonl", "a") as f:
            f.writelines(json.dumps(m) + "\n" for m in dropped)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in kept)
        os.replace(tmp, path)
    return kept


def rewind(out_dir: Optional[str], phase: str, step: int, rank: int = 0) -> Optional[list[dict]]:
    """A run resumed at ``step``: the lines of ``phase`` after ``step`` leave ``out_dir/metrics.jsonl``
    and ``completions.jsonl`` (those steps will be done again) for ``metrics.superseded.jsonl`` and
    ``completions.superseded.jsonl`` (rank 0 rewrites the files atomically). Returns the phase's kept
    metrics lines (None when there is no metrics file)."""
    path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if path is None or not os.path.exists(path):
        return None

    def later(m):
        return m.get("phase", phase) == phase and m.get("step", 0) > step

    completions = os.path.join(out_dir, "completions.jsonl")
    if rank == 0 and os.path.exists(completions):
        _split_file(completions, later)
    return [m for m in _split_file(path, later, write=rank == 0) if m.get("phase") == phase]
