"""The statistics the experiments report, in one place: Pass@K and Maj@K estimated from n >= K
samples per problem, the mean and sample standard deviation of runs, and paired differences with
bootstrap intervals over seeds and problems.

* ``pass_at_k(n, c, k)`` -- the unbiased estimator of Chen et al. (2021): the probability that at
  least one of K samples drawn without replacement from the n is correct, 1 - C(n-c, K) / C(n, K).
  A single draw of K samples is unbiased too, but its variance is far larger.
* ``maj_at_k(answers, truth, k)`` -- majority voting averaged over K-subsets of the n answers
  (every subset when there are at most ``exact_limit`` of them, else ``subsets`` random ones);
  a tie counts as the chance that a random tie-break picks the truth; no answer never votes.
* ``paired_difference(a, b)`` -- for per-seed, per-problem scores of two methods on the same
  problems and starts: the mean difference b - a and its percentile bootstrap interval, resampling
  seeds and problems (the same resample for both methods: the pairing is kept).
* ``run_level_difference(a, b)`` -- the same difference with a t-interval over the runs' mean
  differences (each run one observation): it holds when runs vary more than problems do, where the
  bootstrap over a handful of runs is too narrow. ``verdict_interval`` picks the wider of the two.
"""

import itertools
import math
import random
from collections import Counter
from typing import Hashable, Optional, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples, drawn without replacement from n of which c are correct, is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i = n-c+1}^{n} (1 - k / i): the stable product form of 1 - C(n-c, k) / C(n, k)
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _vote(answers: Sequence[Optional[Hashable]], truth: Hashable) -> float:
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, v in votes.items() if v == top]
    return (truth in tied) / len(tied)


def maj_at_k(answers: Sequence[Optional[Hashable]], truth: Hashable, k: int, *, subsets: int = 256, exact_limit: int = 2000,
             seed: int = 0) -> float:
    """Expected majority-vote correctness of k answers drawn without replacement from ``answers``."""
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: need 1 <= k <= {n} (the answers given), got k={k}")
    if k == n:
        return _vote(answers, truth)
    if math.comb(n, k) <= exact_limit:
        combos = list(itertools.combinations(range(n), k))
        return sum(_vote([answers[i] for i in c], truth) for c in combos) / len(combos)
    rng = random.Random(seed)
    return sum(_vote([answers[i] for i in rng.sample(range(n), k)], truth) for _ in range(subsets)) / subsets


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof = 1; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_sd: no values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
                      ) -> tuple[float, float, float]:
    """(mean of b - a, lower, upper): scores ``[seeds, problems]`` of two methods on the same seeds
    (starts) and problems; a percentile bootstrap over seeds and problems, resampled together."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired_difference: need two [seeds, problems] arrays of one shape, got {a.shape} and {b.shape}")
    d = b - a
    rng = np.random.default_rng(seed)
    seeds, problems = d.shape
    stats = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, seeds, seeds)
        cols = rng.integers(0, problems, problems)
        stats[i] = d[np.ix_(rows, cols)].mean()
    tail = (1.0 - level) / 2
    return float(d.mean()), float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def run_level_difference(a: np.ndarray, b: np.ndarray, *, level: float = 0.95) -> tuple[float, float, float]:
    """(mean of b - a, lower, upper): scores ``[runs, problems]`` of two methods paired run by run;
    each run's mean difference is one observation and the interval is Student's t over them (R - 1
    degrees of freedom). Runs that share an SFT seed are not independent, so with nested seeds this
    is still a lower bound on the uncertainty, but far closer than a bootstrap over 4 runs."""
    from scipy.stats import t

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"run_level_difference: need two [runs >= 2, problems] arrays of one shape, got {a.shape} and {b.shape}")
    d = (b - a).mean(1)
    half = float(t.ppf(0.5 + level / 2, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def verdict_interval(a: np.ndarray, b: np.ndarray, **kw) -> tuple[float, float, float]:
    """The wider of :func:`paired_difference` (problems and runs resampled) and
    :func:`run_level_difference` (t over runs): the interval a verdict is read from."""
    boot, runs = paired_difference(a, b, **kw), run_level_difference(a, b)
    return boot if boot[2] - boot[1] >= runs[2] - runs[1] else runs


__all__ = ["pass_at_k", "maj_at_k", "mean_sd", "paired_difference", "run_level_difference", "verdict_interval"]
