"""unified_rl.accuracy_stats: the estimators equal brute force over every K-subset; the paired bootstrap
keeps the pairing and is exact where the answer is known."""

import itertools
import statistics as stdlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_rl.accuracy_stats import maj_at_k, mean_sd, paired_difference, pass_at_k


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
