"""The pieces of the 2025-26 GRPO variants: GC == autograd of the piece's objective (fp64), and the
advantage estimators against their formulas written out by hand."""

import math

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

import unified_rl as url
import unified_rl.coefficients as C
from helpers import check_gc as _check, filled as _filled

TERMS = {
    "ppo_clip_delta": lambda: C.ppo_clip(0.2, 0.28, delta=1.5),
    "ppo_dual_clip": lambda: C.ppo_clip(0.2, dual_clip=1.3),
    "gspo_sequence": lambda: C.ppo_clip(0.3, 0.4, level="sequence"),
    "rloo_sequence_sum": lambda: C.ppo_clip(0.2, level="sequence_sum"),
    "sapo": lambda: C.sapo(1.0, 1.05),
    "sapo_sharp": lambda: C.sapo(3.0, 5.0),
    "sapo_sequence": lambda: C.sapo(1.0, 1.05, level="sequence"),
    "cispo": lambda: C.cispo(1.2),
    "cispo_two_sided": lambda: C.cispo(0.28, epsilon_low=0.2),
    "cispo_sequence": lambda: C.cispo(1.1, level="sequence"),
    "kl_k1": lambda: C.kl(0.3, "k1"),
    "kl_k2": lambda: C.kl(0.3, "k2"),
    "kl_k3": lambda: C.kl(0.3, "k3"),
    "off_policy_masked_clip": lambda: C.gated(C.ppo_clip(0.2), C.off_policy_mask(0.05)),
    "off_policy_masked_gspo": lambda: C.gated(C.ppo_clip(0.2, level="sequence"), C.off_policy_mask(0.05)),
}
from helpers import ALL_AGGREGATIONS as AGGREGATIONS  # noqa: E402


@settings(max_examples=150)
@given(seed=st.integers(0, 100_000), name=st.sampled_from(sorted(TERMS)), agg=st.sampled_from(AGGREGATIONS))
def test_variant_term_gc_is_gradient_of_objective(seed, name, agg):
    r, logp = _filled(seed, agg, allow_empty=True)
    _check(TERMS[name](), r, logp)


def test_sequence_level_terms_move_every_token_of_a_sequence():
    """GSPO's GC is constant along a sequence (equal weights within it): f'(s) s, not a per-token ratio."""
    r, logp = _filled(3, C.sequence_mean())
    r = r.replace(advantages=torch.where(r.completion_mask, torch.linspace(-1, 1, r.batch_size, dtype=torch.float64)[:, None], 0.0))
    gc = C.ppo_clip(10.0, level="sequence").gc(r, logp)  # nothing clips: GC = A s
    s = torch.exp(C.ratio.log_ratio(r, logp, "sequence"))
    torch.testing.assert_close(gc, torch.where(r.completion_mask, r.advantages * s, 0.0), rtol=1e-12, atol=0)


@given(seed=st.integers(0, 100_000), beta=st.floats(0.05, 2.0), loss=st.sampled_from(["ipo", "hinge", "simpo"]),
       normalized=st.booleans(), gamma=st.floats(0.0, 1.5))
def test_preference_losses_gc_is_gradient_of_objective(seed, beta, loss, normalized, gamma):
    r, logp = _filled(seed, C.group_mean(normalized))
    term = C.dpo_term(beta, normalized, loss=loss, gamma=gamma if loss == "simpo" else 0.0)
    term.check(r)
    _check(term, r, logp)


@given(seed=st.integers(0, 100_000), beta=st.floats(0.05, 2.0))
def test_orpo_gc_is_gradient_of_objective(seed, beta):
    """ORPO's odds-ratio term and its NLL part (policy gradient on chosen_nll's advantage): GC x
    weights is autograd of the objective; the NLL part is the mean log-likelihood of the chosen tokens."""
    r, logp = _filled(seed, C.group_mean(True))
    term = C.odds_ratio(beta)
    term.check(r)
    _check(term, r, logp)
    r = C.chosen_nll()(r)
    _check(C.policy_gradient(), r, logp)
    chosen = r.completion_mask & r.chosen[:, None]
    torch.testing.assert_close(C.policy_gradient().objective(r, logp), logp[chosen].mean(), rtol=1e-12, atol=0)


def test_sapo_and_cispo_and_dual_clip_by_hand():
    ids = torch.zeros(1, 4, dtype=torch.long)
    m = torch.tensor([[False, True, True, True]])
    adv = torch.tensor([[0.0, 2.0, -1.0, -1.0]], dtype=torch.float64)
    old = torch.tensor([[0.0, -1.0, -1.0 - math.log(2.0), -1.0 - math.log(4.0)]], dtype=torch.float64)  # r = 1, 2, 4
    r = url.Rollout(ids, torch.ones_like(m), m, advantages=adv, old_logprobs=old)
    logp = torch.full((1, 4), -1.0, dtype=torch.float64)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # SAPO: GC = 4 s (1 - s) r A with s = sigmoid(tau (r - 1)): at r = 1 it is A exactly.
    want = [0.0, 2.0, 4 * sig(1.05) * (1 - sig(1.05)) * 2 * -1, 4 * sig(3 * 1.05) * (1 - sig(3 * 1.05)) * 4 * -1]
    torch.testing.assert_close(C.sapo(1.0, 1.05).gc(r, logp), torch.tensor([want], dtype=torch.float64), rtol=1e-14, atol=0)
    # CISPO (TRL): GC = min(r, 3) A -- clipped tokens keep a gradient.
    torch.testing.assert_close(C.cispo(3.0).gc(r, logp), torch.tensor([[0.0, 2.0, -2.0, -3.0]], dtype=torch.float64))
    # Dual clip c = 3 and TRL's delta = 3 both drop the A < 0, r = 4 token and keep r = 2.
    for term in (C.ppo_clip(0.2, dual_clip=3.0), C.ppo_clip(0.2, delta=3.0)):
        torch.testing.assert_close(term.gc(r, logp), torch.tensor([[0.0, 2.0, -2.0, 0.0]], dtype=torch.float64))


def _rewards(seed, n_groups=4, g=5):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 3, size=n_groups * g).astype(float) * rng.choice([0.5, 1.0, 7.0])
    scored = rng.random(n_groups * g) > 0.15
    return rewards, scored, np.repeat(np.arange(n_groups), g)


def _rollout(rewards, scored, groups, **extra):
    n = len(rewards)
    ids = torch.zeros(n, 4, dtype=torch.long)
    m = torch.tensor([[False, True, True, True]] * n)
    return url.Rollout(ids, torch.ones_like(m), m, group_ids=torch.tensor(groups), rewards=torch.tensor(rewards),
                       scored=torch.tensor(scored), **extra)


@given(seed=st.integers(0, 10_000), scale=st.sampled_from(["batch", "none"]))
def test_scale_rewards_by_hand(seed, scale):
    """TRL's scale_rewards="batch" / "none" (without its +1e-4): A = (r - mean_g) / std_batch or r - mean_g."""
    rewards, scored, groups = _rewards(seed)
    got = C.group_normalized(scale).advantages(_rollout(rewards, scored, groups))[:, 1].numpy()
    std = np.std(rewards[scored], ddof=1) if scored.sum() > 1 else 0.0
    for i in range(len(rewards)):
        mates = (groups == groups[i]) & scored
        vals = rewards[mates]
        spread = scored[i] and mates.sum() >= 2 and vals.max() > vals.min()
        want = (rewards[i] - vals.mean()) if spread else 0.0
        if scale == "batch":
            want = want / std if std > 0 else 0.0
        assert abs(got[i] - want) <= 1e-12 * max(1.0, abs(want))


@given(seed=st.integers(0, 10_000), beta=st.floats(0.0, 0.5), est=st.sampled_from(["k1", "k2", "k3"]))
def test_rloo_with_kl_in_the_reward_by_hand(seed, beta, est):
    """TRL's RLOO: r' = r - beta sum_t D_t, then r'_i - mean of the other scored r'_j of the group."""
    rewards, scored, groups = _rewards(seed)
    rng = np.random.default_rng(seed + 1)
    old = -rng.random((len(rewards), 4)) * 2
    ref = old + rng.normal(0, 0.3, old.shape)
    old[:, 0] = ref[:, 0] = 0.0
    r = _rollout(rewards, scored, groups, old_logprobs=torch.tensor(old), ref_logprobs=torch.tensor(ref))
    got = C.leave_one_out(beta, est).advantages(r)[:, 1].numpy()
    lk = ref[:, 1:] - old[:, 1:]
    d = {"k1": -lk, "k2": 0.5 * lk**2, "k3": np.exp(lk) - lk - 1}[est].sum(1)
    shaped = rewards - beta * d
    for i in range(len(rewards)):
        others = (groups == groups[i]) & scored & (np.arange(len(rewards)) != i)
        want = shaped[i] - shaped[others].mean() if scored[i] and others.any() else 0.0
        assert abs(got[i] - want) <= 1e-12 * max(1.0, abs(want))


@given(seed=st.integers(0, 10_000), gamma=st.floats(0.5, 1.0), beta=st.floats(0.0, 0.3))
def test_reinforce_pp_returns_by_hand(seed, gamma, beta):
    """REINFORCE++: G_t = sum_l gamma^l r_{t+l}, r_t = R 1[last] - beta k1_t, whitened over the batch's tokens."""
    rewards, scored, groups = _rewards(seed, n_groups=3, g=3)
    rng = np.random.default_rng(seed)
    old = -rng.random((len(rewards), 4))
    ref = old + rng.normal(0, 0.2, old.shape)
    r = _rollout(rewards, scored, groups, old_logprobs=torch.tensor(old), ref_logprobs=torch.tensor(ref))
    got = C.discounted_returns(gamma, beta).advantages(r).numpy()
    returns = np.zeros((len(rewards), 4))
    for i in range(len(rewards)):
        g = 0.0
        for t in (3, 2, 1):
            g = (rewards[i] if t == 3 else 0.0) - beta * (old[i, t] - ref[i, t]) + gamma * g
            returns[i, t] = g
    vals = returns[scored][:, 1:]
    want = np.where(scored[:, None], (returns - vals.mean()) / vals.std(), 0.0)
    want[:, 0] = 0.0
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_mask_truncated_weights_only_finished_completions():
    rewards, scored, groups = _rewards(0, n_groups=2, g=2)
    r = _rollout(rewards, np.ones_like(scored), groups, truncated=torch.tensor([True, False, False, True]))
    w = C.mask_truncated(C.token_mean())(r)
    assert (w[[0, 3]] == 0).all() and torch.allclose(w[1, 1:], torch.full((3,), 1 / 6, dtype=torch.float64))
    coef = C.chain(C.group_normalized(), C.policy_gradient(), aggregation=C.mask_truncated(C.token_mean()))
    try:
        coef.prepare(r.replace(truncated=None))
    except ValueError as e:
        assert "needs Rollout.truncated" in str(e)
    else:
        raise AssertionError("a chain that masks truncated completions must refuse a rollout without `truncated`")


@given(seed=st.integers(0, 100_000), q=st.floats(0.05, 1.0), level=st.sampled_from(["token", "sequence"]),
       agg=st.sampled_from(AGGREGATIONS))
def test_top_entropy_mask_gc_is_gradient_and_keeps_the_top_quantile(seed, q, level, agg):
    r, logp = _filled(seed, agg, allow_empty=True)
    g = torch.Generator().manual_seed(seed)
    r = r.replace(entropies=torch.where(r.completion_mask, torch.rand(r.input_ids.shape, generator=g, dtype=torch.float64), 0.0))
    term = C.gated(C.ppo_clip(0.2, level=level), C.top_entropy_mask(q))
    r = term.prepare(r)
    _check(term, r, logp, nontrivial=False)  # the few tokens kept may all sit on the clipped branch
    values = r.entropies[r.completion_mask]
    if values.numel():
        kept = r.keep[r.completion_mask]
        assert bool((values[kept].min() if kept.any() else values.max() + 1) >= values[~kept].max()) if (~kept).any() else True
        assert abs(float(kept.double().mean()) - q) <= 1.0 / values.numel() + 1e-12 or values.numel() < 3
