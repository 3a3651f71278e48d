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


def _phases(history: Sequence[dict]) -> dict[str, int]:
    """Each phase's step offset on one run-wide axis (phases in the order they ran)."""
    offsets: dict[str, int] = {}
    total = 0
    for phase in dict.fromkeys(m.get("phase", "") for m in history):
        offsets[phase] = total
        total += max((m.get("step", 0) for m in history if m.get("phase", "") == phase), default=0)
    return offsets


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, color="0.4", transform=ax.transAxes)
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
    steps = [m for m in history if "loss" in m]
    for phase in dict.fromkeys(m.get("phase", "") for m in steps):
        pts = [(offsets[phase] + m["step"], m["loss"]) for m in steps if m.get("phase", "") == phase]
        axes[0].plot([x for x, _ in pts], [y for _, y in pts], color=colours[phase], lw=0.8, label=phase)
    if steps:
        axes[0].legend(fontsize=8)
        axes[0].set(title="loss (-J; each method's own surrogate)", xlabel="step (whole run)")
    else:
        _empty(axes[0], notes["loss"])
    rl = [m for m in history if "reward/mean" in m]
    for phase in dict.fromkeys(m.get("phase", "") for m in rl):
        xs = [offsets[phase] + m["step"] for m in rl if m.get("phase", "") == phase]
        r = [m["reward/mean"] for m in rl if m.get("phase", "") == phase]
        axes[1].plot(xs, r, alpha=0.3, color=colours[phase])
        axes[1].plot(xs, _smooth(r), color=colours[phase], label=f"{phase} (10-step mean)")
    if rl:
        axes[1].legend(fontsize=8)
        axes[1].set(title="training reward", xlabel="step (whole run)")
    else:
        _empty(axes[1], notes["training reward"])
    kl = [m for m in history if "kl/k3" in m]
    for phase in dict.fromkeys(m.get("phase", "") for m in kl):
        pts = [(offsets[phase] + m["step"], m["kl/k3"]) for m in kl if m.get("phase", "") == phase]
        axes[2].plot([x for x, _ in pts], [y for _, y in pts], color=colours[phase], label=phase)
    if kl:
        axes[2].set(title="KL to the reference (k3 estimate)", xlabel="step (whole run)")
    else:
        _empty(axes[2], notes["KL"])
    acc = [m for m in history if "eval/accuracy" in m]
    for phase in dict.fromkeys(m.get("phase", "") for m in acc):
        pts = [(offsets[phase] + m["step"], m["eval/accuracy"]) for m in acc if m.get("phase", "") == phase]
        axes[3].plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=colours[phase], label=phase)
    if acc:
        axes[3].legend(fontsize=8)
        axes[3].set(title="held-out greedy accuracy", xlabel="step (whole run)", ylim=(0, 1))
    else:
        _empty(axes[3], notes["held-out greedy accuracy"])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
