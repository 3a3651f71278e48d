"""Plots of training metrics. Uses matplotlib's object API (no pyplot, no backend switch), so it
works headless and leaves a notebook's inline backend alone."""

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


def plot_training(history: Sequence[dict], path: str, title: str = "unified_rl") -> str:
    """Reward (raw and smoothed), k3 KL and held-out accuracy over steps, one panel each."""
    fig, axes = figure(13, 3.6, ncols=3)
    rl = [m for m in history if "reward/mean" in m]
    steps = list(range(1, len(rl) + 1))
    if rl:
        r = [m["reward/mean"] for m in rl]
        axes[0].plot(steps, r, alpha=0.3, color="C0")
        axes[0].plot(steps, _smooth(r), color="C0", label="reward (10-step mean)")
        axes[0].legend()
        axes[1].plot(steps, [m.get("kl/k3", 0.0) for m in rl], color="C1")
    axes[0].set(title="training reward", xlabel="RL step")
    axes[1].set(title="KL to reference (k3)", xlabel="RL step")
    acc = [(m["step"], m["eval/accuracy"], m.get("phase", "")) for m in history if "eval/accuracy" in m]
    for phase in dict.fromkeys(p for _, _, p in acc):
        pts = [(s, a) for s, a, p in acc if p == phase]
        axes[2].plot([s for s, _ in pts], [a for _, a in pts], marker="o", label=phase)
    axes[2].set(title="held-out greedy accuracy", xlabel="step", ylim=(0, 1))
    if acc:
        axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
