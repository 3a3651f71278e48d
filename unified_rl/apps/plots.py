"""Plots of training metrics. Uses matplotlib's object API (no pyplot, no backend switch), so it
works headless and leaves a notebook's inline backend alone."""

import textwrap
from typing import Sequence

from matplotlib.figure import Figure


def figure(width: float, height: float, ncols: int = 1):
    """A (figure, axes) pair that never touches the global pyplot state."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols)


def _smooth(xs: Sequence[float], k: int = 10) -> list[float]:
    out, acc = [], []
    for x in xs:
        acc.append(x)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def _phases(history: Sequence[dict]) -> dict[str, int]:
    """Each phase's step offset on one run-wide axis (phases in the order they ran)."""
    offsets: dict[str, int] = {}
    total = 0
    for phase in dict.fromkeys(m.get("phase", "") for m in history):
        offsets[phase] = total
        total += max((m.get("step", 0) for m in history if m.get("phase", "") == phase), default=0)
    return offsets


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, textwrap.fill(text, 30), ha="center", va="center", fontsize=9, color="0.4", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def empty_panels(history: Sequence[dict]) -> dict[str, str]:
    """Why a panel of :func:`plot_training` has nothing to show, by panel title (empty: all have data)."""
    phases = ", ".join(dict.fromkeys(m.get("phase", "") for m in history)) or "this run"
    why = {"loss": "no training steps logged",
           "training reward": f"no reward in this run: {phases} trains on given completions or pairs",
           "KL": "no KL term in this run (beta = 0, or a method without one)",
           "held-out greedy accuracy": "no held-out evaluation in this run (no eval rows)"}
    key = {"loss": "loss", "training reward": "reward/mean", "KL": "kl/k3", "held-out greedy accuracy": "eval/accuracy"}
    return {panel: text for panel, text in why.items() if not any(key[panel] in m for m in history)}


def plot_training(history: Sequence[dict], path: str, title: str = "unified_rl") -> str:
    """Loss, training reward (raw and smoothed), k3 KL and held-out accuracy on one run-wide step axis,
    each phase (SFT, then an RL method) in its own colour and named; an empty panel says why."""
    fig, axes = figure(16, 3.6, ncols=4)
    offsets, notes = _phases(history), empty_panels(history)
    colours = {p: f"C{i}" for i, p in enumerate(offsets)}
    for ax in axes:
        for phase, off in offsets.items():
            if off:
                ax.axvline(off + 0.5, color="0.7", lw=0.8, ls=":")
    panels = (("loss", "loss", "loss (-J; each method's own surrogate)", dict(lw=0.8)),
              ("reward/mean", "training reward", "training reward", None),
              ("kl/k3", "KL", "KL to the reference (k3 estimate)", {}),
              ("eval/accuracy", "held-out greedy accuracy", "held-out greedy accuracy", dict(marker="o")))
    for ax, (key, note, panel_title, style) in zip(axes, panels):
        if note in notes:
            _empty(ax, notes[note])
            continue
        rows = [m for m in history if key in m]
        for phase in dict.fromkeys(m.get("phase", "") for m in rows):
            xs = [offsets[phase] + m["step"] for m in rows if m.get("phase", "") == phase]
            ys = [m[key] for m in rows if m.get("phase", "") == phase]
            if style is None:  # raw and smoothed
                ax.plot(xs, ys, alpha=0.3, color=colours[phase])
                ax.plot(xs, _smooth(ys), color=colours[phase], label=f"{phase} (10-step mean)")
            else:
                ax.plot(xs, ys, color=colours[phase], label=phase, **style)
        ax.legend(fontsize=8)
        ax.set(title=panel_title, xlabel="step (whole run)", **({"ylim": (0, 1)} if key == "eval/accuracy" else {}))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
