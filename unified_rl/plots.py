"""Plots of training metrics (matplotlib, headless)."""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _smooth(xs: Sequence[float], k: int = 10) -> list[float]:
    out, acc = [], []
    for x in xs:
        acc.append(x)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def plot_training(history: Sequence[dict], path: str, title: str = "unified_rl") -> str:
    """Reward (raw and smoothed), k3 KL and held-out accuracy over steps, one panel each."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
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
    plt.close(fig)
    return path
