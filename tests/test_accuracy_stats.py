"""unified_rl.accuracy_stats: the estimators equal brute force over every K-subset; the paired bootstrap
keeps the pairing and is exact where the answer is known."""

import itertools
import statistics as stdlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_rl.accuracy_stats import maj_at_k, mean_sd, paired_difference, pass_at_k, run_level_difference, verdict_interval


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_mean_over_every_k_subset(nck):
    n, c, k = nck
    correct = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(correct, k))
    brute = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    if k > 1:
        assert pass_at_k(n, c, k) >= pass_at_k(n, c, k - 1) - 1e-12  # more tries never hurt


answer = st.one_of(st.none(), st.sampled_from(["1", "2", "3"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(answer, min_size=1, max_size=8).flatmap(lambda a: st.tuples(st.just(a), st.integers(1, len(a)), st.sampled_from(["1", "2"]))))
def test_maj_at_k_is_the_mean_vote_over_every_k_subset(case):
    answers, k, truth = case
    votes = []
    for subset in itertools.combinations(answers, k):
        counts = {a: subset.count(a) for a in set(subset) if a is not None}
        top = max(counts.values()) if counts else 0
        tied = [a for a, v in counts.items() if v == top]
        votes.append((truth in tied) / len(tied) if tied else 0.0)
    assert maj_at_k(answers, truth, k) == pytest.approx(sum(votes) / len(votes), abs=1e-12)


def test_maj_at_k_ties_abstentions_and_sampled_subsets():
    assert maj_at_k(["1", "2"], "1", 2) == 0.5  # a tie: the chance a random tie-break picks the truth
    assert maj_at_k([None, None, "3"], "3", 3) == 1.0  # no answer never votes
    assert maj_at_k([None, None], "3", 2) == 0.0
    answers = ["1"] * 9 + ["2"] * 7 + [None] * 4  # C(20, 5) = 15504 subsets: sampled unless the limit allows them all
    exact = maj_at_k(answers, "1", 5, exact_limit=20_000)
    assert abs(maj_at_k(answers, "1", 5, subsets=4000) - exact) < 0.03
    with pytest.raises(ValueError, match="1 <= k <= 3"):
        maj_at_k(["1", "2", "3"], "1", 4)


def test_mean_sd_is_the_sample_standard_deviation():
    values = [0.62, 0.70, 0.66, 0.71]
    assert mean_sd(values) == pytest.approx((stdlib.mean(values), stdlib.stdev(values)), abs=1e-15)
    assert mean_sd([0.5]) == (0.5, 0.0)


def test_paired_difference():
    rng = np.random.default_rng(0)
    a = (rng.random((4, 300)) < 0.6).astype(float)
    diff, lo, hi = paired_difference(a, a + 0.05)
    assert diff == pytest.approx(0.05) and lo == pytest.approx(0.05) and hi == pytest.approx(0.05)  # a constant shift is certain
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    b = np.where(rng.random(a.shape) < 0.1, 1.0 - a, a)  # flips 10% of outcomes
    diff, lo, hi = paired_difference(a, b)
    assert lo <= diff <= hi and hi - lo < 0.1
    assert paired_difference(a, b) == paired_difference(a, b)  # seeded
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(a, a[:, :10])
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 2, 5)


def _nested_runs(rng, effect, run_sd, runs=4, problems=2000, p=0.4):
    """Two methods' 0/1 scores on the same problems, ``runs`` paired runs whose true difference varies
    from run to run (sd ``run_sd``) around ``effect``: run-to-run variation larger than the problems'."""
    a = (rng.random((runs, problems)) < p).astype(float)
    shift = effect + run_sd * rng.standard_normal(runs)
    b = (rng.random((runs, problems)) < np.clip(p + shift, 0, 1)[:, None]).astype(float)
    return a, b


def test_run_level_interval_covers_where_the_problem_bootstrap_does_not():
    """On synthetic runs whose difference varies by 3 points run to run (problem-level noise about
    +-1.5 points per run over 2,000 problems: run-to-run variation dominates, as in the experiments),
    the t-interval over run means covers the true difference about 95% of the time; the bootstrap over
    4 runs and the problems covers clearly less."""
    rng = np.random.default_rng(1)
    sims, effect = 600, 0.02
    t_cover = boot_cover = 0
    for _ in range(sims):
        a, b = _nested_runs(rng, effect, 0.03)
        _, lo, hi = run_level_difference(a, b)
        t_cover += lo <= effect <= hi
        _, lo, hi = paired_difference(a, b, resamples=100, seed=int(rng.integers(1 << 30)))
        boot_cover += lo <= effect <= hi
    assert 0.93 <= t_cover / sims <= 0.97, t_cover / sims
    assert boot_cover / sims < t_cover / sims - 0.03, (boot_cover / sims, t_cover / sims)


def test_run_level_difference_is_students_t_over_run_means():
    a = np.zeros((4, 3))
    b = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=float)
    d = b.mean(1)  # 1/3, 2/3, 0, 1
    mean, lo, hi = run_level_difference(a, b)
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t(3) at 97.5%
    assert mean == pytest.approx(0.5) and lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    wide = verdict_interval(a, b)
    assert wide[2] - wide[1] >= max(hi - lo, paired_difference(a, b)[2] - paired_difference(a, b)[1]) - 1e-12
    with pytest.raises(ValueError, match="runs >= 2"):
        run_level_difference(a[:1], b[:1])
