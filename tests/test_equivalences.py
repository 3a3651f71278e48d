"""Equivalences between methods and invariants of the pieces (fp64, exact or tight)."""

import torch
from hypothesis import given, strategies as st

import unified_rl as url
import unified_rl.coefficients as C
from helpers import assert_grads_close, grads, random_rollout, tiny_model, true_logprobs, with_critic, with_policy_logprobs

MODEL = tiny_model()


def _grad(method, r):
    MODEL.zero_grad()
    stats = url.engine.backward(MODEL, method.coefficient.prepare(r), method.coefficient)
    return grads(MODEL), stats


@given(seed=st.integers(0, 100_000))
def test_rft_on_all_correct_data_equals_sft(seed):
    r = random_rollout(seed)
    r = r.replace(rewards=torch.ones_like(r.rewards))
    g_rft, _ = _grad(url.methods.rft(), r)
    g_sft, _ = _grad(url.methods.sft(), r)
    assert_grads_close(g_rft, g_sft, rtol=0, atol=0)


@given(seed=st.integers(0, 100_000))
def test_grpo_and_ppo_at_rho_one_beta_zero_give_gc_equal_advantage(seed):
    r = random_rollout(seed)
    with torch.no_grad():
        lp = true_logprobs(MODEL, r)
    r = r.replace(old_logprobs=lp, ref_logprobs=lp)
    for method in (url.methods.grpo(beta=0.0), url.methods.ppo(beta=0.0)):
        prepared = method.coefficient.prepare(with_critic(method, r, tiny_model(seed=2))[0])
        gc = method.coefficient(prepared, lp)
        torch.testing.assert_close(gc, prepared.advantages, rtol=0, atol=0)


@given(seed=st.integers(0, 100_000), beta=st.floats(0.01, 1.0))
def test_dpo_chosen_and_rejected_gcs_are_exact_negatives(seed, beta):
    r = with_policy_logprobs(MODEL, random_rollout(seed, n_groups=3, group_size=2), seed)
    r = r.replace(chosen=torch.arange(6) % 2 == 1)
    coef = url.methods.dpo(beta=beta).coefficient
    prepared = coef.prepare(r)
    with torch.no_grad():
        gc = coef(prepared, true_logprobs(MODEL, r))
    first = r.completion_mask.long().argmax(-1)
    per_seq = gc[torch.arange(6), first]
    assert bool((gc == torch.where(r.completion_mask, per_seq[:, None], 0.0)).all())  # one value per sequence
    torch.testing.assert_close(per_seq[1::2], -per_seq[0::2], rtol=0, atol=0)
    assert bool((per_seq[1::2] > 0).all())


@given(seed=st.integers(0, 100_000), beta=st.floats(0.0, 5.0))
def test_k3_term_is_zero_when_policy_equals_reference(seed, beta):
    r = random_rollout(seed)
    with torch.no_grad():
        lp = true_logprobs(MODEL, r)
    r = r.replace(ref_logprobs=lp, weights=C.sequence_mean()(r))
    k3 = C.kl_k3(beta)
    assert bool((k3.gc(r, lp) == 0).all())
    assert k3.objective(r, lp).item() == 0.0


@given(seed=st.integers(0, 100_000), name=st.sampled_from(["sft", "rft", "grpo", "dpo", "ppo", "grpo_process"]))
def test_nan_in_masked_slots_changes_nothing_bitwise(seed, name):
    r = with_policy_logprobs(MODEL, random_rollout(seed, n_groups=3, group_size=2), seed)
    m = r.completion_mask
    r = r.replace(chosen=torch.arange(6) % 2 == 0, step_mask=m, step_rewards=torch.where(m, 1.0 * (r.input_ids % 2), 0.0))
    poison = lambda x: torch.where(m, x, torch.full_like(x, float("nan")))  # noqa: E731
    dirty = r.replace(old_logprobs=poison(r.old_logprobs), ref_logprobs=poison(r.ref_logprobs),
                      step_rewards=torch.where(m, r.step_rewards, float("inf")))
    make = {"sft": url.methods.sft, "rft": url.methods.rft, "grpo": url.methods.grpo, "dpo": url.methods.dpo,
            "ppo": url.methods.ppo, "grpo_process": lambda: url.methods.grpo(supervision="process")}[name]
    results = []
    for rollout in (r, dirty):
        method = make()
        g, stats = _grad(method, with_critic(method, rollout, tiny_model(seed=3))[0])
        assert bool((stats.gc[~m] == 0).all())
        results.append((g, stats.gc))
    for a, b in zip(results[0][0], results[1][0]):
        assert torch.equal(a, b)
    assert torch.equal(results[0][1], results[1][1])


@given(seed=st.integers(0, 100_000), a=st.floats(0.1, 10.0), b=st.floats(-5.0, 5.0))
def test_group_advantages_sum_to_zero_and_are_affine_invariant(seed, a, b):
    r = random_rollout(seed, n_groups=4, group_size=4)
    g = torch.Generator().manual_seed(seed)
    r = r.replace(rewards=torch.randn(16, generator=g, dtype=torch.float64))
    est = C.group_normalized()
    per_seq = torch.where(r.completion_lengths > 0, est(r).advantages.sum(-1) / r.completion_lengths.clamp(min=1), 0.0)
    for grp in range(4):
        assert abs(per_seq[r.group_ids == grp].sum().item()) < 1e-12
    moved = est(r.replace(rewards=a * r.rewards + b)).advantages
    torch.testing.assert_close(moved, est(r).advantages, rtol=1e-9, atol=1e-12)


@given(value=st.floats(-1e6, 1e6, allow_nan=False), size=st.integers(2, 9))
def test_all_equal_group_gives_exactly_zero_advantage(value, size):
    r = random_rollout(0, n_groups=1, group_size=size)
    r = r.replace(rewards=torch.full((size,), value, dtype=torch.float64))
    assert bool((C.group_normalized()(r).advantages == 0).all())
    steps = r.completion_mask
    r = r.replace(step_mask=steps, step_rewards=torch.where(steps, value, 0.0))
    assert bool((C.process_normalized()(r).advantages == 0).all())


def test_unscored_samples_are_left_out_of_the_baseline():
    """Group rewards [1, 0, None, 0]: mean 1/3 over three scored; the unscored sample gets 0."""
    r = random_rollout(0, n_groups=1, group_size=4)
    r = r.replace(rewards=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64), scored=torch.tensor([True, True, False, True]))
    adv = C.group_normalized()(r).advantages[torch.arange(4), r.completion_mask.long().argmax(-1)]
    std = torch.tensor([1.0, 0.0, 0.0]).double().std()
    expected = torch.tensor([2 / 3, -1 / 3, 0.0, -1 / 3], dtype=torch.float64) / std
    expected[2] = 0.0
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-15)


def test_process_advantage_by_hand():
    """Two samples of one group, steps rewards {1, 0} and {1}: mean 2/3, std sqrt(1/3).
    Sample 0, tokens before/at step 1 get r~(1) + r~(0); after step 1 up to step 2, r~(0)."""
    ids = torch.zeros(2, 5, dtype=torch.long)
    attn = torch.ones(2, 5, dtype=torch.bool)
    comp = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    steps = torch.tensor([[0, 0, 1, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    rewards = torch.tensor([[0, 0, 1.0, 0, 0.0], [0, 0, 1.0, 0, 0]], dtype=torch.float64)
    r = url.Rollout(ids, attn, comp, group_ids=torch.tensor([0, 0]), step_rewards=rewards, step_mask=steps)
    std = (1 / 3) ** 0.5
    hi, lo = (1 - 2 / 3) / std, (0 - 2 / 3) / std
    expected = torch.tensor([[0, hi + lo, hi + lo, lo, lo], [0, hi, hi, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(C.process_normalized()(r).advantages, expected, rtol=1e-12, atol=1e-15)


def test_gae_matches_a_hand_written_loop():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 6, generator=g, dtype=torch.float64)
    rewards = torch.randn(2, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    got = C.gae_advantages(rewards, values, mask, gamma, lam)
    for b in range(2):
        pos = mask[b].nonzero().squeeze(1).tolist()
        for k, t in enumerate(pos):
            expected = 0.0
            for l, s in enumerate(pos[k:]):
                nxt = values[b, pos[k + l + 1]] if k + l + 1 < len(pos) else 0.0
                expected += (gamma * lam) ** l * (rewards[b, s] + gamma * nxt - values[b, s])
            assert abs(got[b, t].item() - float(expected)) < 1e-12


def test_ppo_value_model_learns_the_returns():
    r = with_policy_logprobs(MODEL, random_rollout(4), 4)
    method = url.methods.ppo(beta=0.04, value_lr=3e-3, value_clip=None)
    r, critic = with_critic(method, r, MODEL)
    prepared = method.coefficient.prepare(r)
    losses = [critic.update(prepared)["value/loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
