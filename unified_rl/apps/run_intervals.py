"""The headline comparisons of docs/results.md recomputed from the committed ``scores.npz``, each with
both intervals -- the bootstrap over runs and problems, and Student's t over the runs' means -- and
the verdict read from the wider (``python -m unified_rl.apps.run_intervals``)."""

import os

import numpy as np

from ..accuracy_stats import paired_difference, run_level_difference, verdict_interval
from .experiments.design import verdict

RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "results")

# (experiment folder, method a, method b, score key): the claim is b - a > 0
CLAIMS = [
    ("figure5", "rft", "online_rft", "eval_in"),
    ("figure5", "online_rft", "grpo", "eval_in"),
    ("figure5", "grpo", "grpo_process", "eval_in"),
    ("figure5", "control", "grpo", "eval_in"),
    ("figure5", "control", "grpo", "eval_hard"),
    ("process-vs-outcome", "grpo", "grpo_process", "eval_in"),
    ("process-vs-outcome", "control", "grpo", "eval_in"),
    ("process-vs-outcome", "control", "grpo_process", "eval_in"),
    ("figure6", "non_iterative", "iterative", "eval_in"),
    ("figure6", "non_iterative", "iterative", "eval_hard"),
    ("figure7", "start", "grpo", "maj@64"),
    ("figure7", "start", "grpo", "pass@64"),
    ("flawed-teacher-full", "control", "grpo", "eval_short|affected"),
    ("flawed-teacher-full", "control", "grpo", "eval_short|unaffected"),
    ("figure5-teacher", "rft", "online_rft", "eval_short|affected"),
    ("figure5-teacher", "online_rft", "grpo", "eval_short|affected"),
    ("figure5-teacher", "grpo", "grpo_process", "eval_short|affected"),
    ("figure5-teacher", "control", "grpo", "eval_short|affected"),
    ("figure5-teacher", "control", "grpo", "eval_in|affected"),
    ("figure6-teacher", "non_iterative", "iterative", "eval_in"),
    ("figure7-teacher", "start", "grpo", "maj@64"),
    ("figure7-teacher", "start", "grpo", "pass@64"),
]


def _scores(scores, arm: str, key: str) -> np.ndarray:
    """[runs, problems] 0/1 of ``arm``: ``key`` a split (``arm/key``), or ``split|stratum`` in the
    flawed-teacher folders (``arm|split|correct`` on the problems with / without an affected step)."""
    if "|" not in key:
        return scores[f"{arm}/{key}"]
    split, stratum = key.split("|")
    affected = scores[f"{arm}|{split}|affected"][0].astype(bool)
    return scores[f"{arm}|{split}|correct"][:, affected if stratum == "affected" else ~affected]


def rows(results: str = RESULTS) -> list[dict]:
    """Each claim's difference in points with both intervals, the run count and the verdict from the wider."""
    out = []
    for folder, a, b, key in CLAIMS:
        scores = np.load(os.path.join(results, folder, "scores.npz"))
        x, y = _scores(scores, a, key), _scores(scores, b, key)
        boot, runs, wide = paired_difference(x, y), run_level_difference(x, y), verdict_interval(x, y)
        out.append({"claim": f"{folder}: {b} - {a} ({key.replace('|', ', ')})", "runs": x.shape[0], "problems": x.shape[1],
                    "bootstrap": [100 * v for v in boot], "t_over_runs": [100 * v for v in runs], "verdict": verdict(wide)})
    return out


def table(results: str = RESULTS) -> str:
    """The rows as a Markdown table."""
    def cell(v):
        return f"{v[0]:+.1f} [{v[1]:+.1f}, {v[2]:+.1f}]"

    lines = ["| comparison (points) | runs x problems | bootstrap over runs and problems | t over the runs' means | verdict (the wider) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['runs']} x {r['problems']:,} | {cell(r['bootstrap'])} | {cell(r['t_over_runs'])} | {r['verdict']} |"
              for r in rows(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
