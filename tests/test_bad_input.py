"""Bad input raises a clear error naming what and where -- never a silent NaN."""

import pytest
import torch

import unified_rl as url
from helpers import random_rollout, tiny_model, with_policy_logprobs

MODEL = tiny_model()


def _base():
    return random_rollout(0, n_groups=2, group_size=2)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("attention_mask", torch.ones(4, 3, dtype=torch.bool), r"attention_mask: expected shape \[batch=4, seq=\d+\] \(bool\), got \[4, 3\]"),
        ("completion_mask", "ones_long", r"completion_mask: expected shape .* \(bool\), got .* \(torch.int64\)"),
        ("rewards", torch.zeros(5, dtype=torch.float64), r"rewards: expected shape \[batch=4\] \(float\), got \[5\]"),
        ("rewards", torch.zeros(4, dtype=torch.long), r"rewards: expected .* \(float\), got \[4\] \(torch.int64\)"),
        ("group_ids", torch.zeros(4), r"group_ids: expected .* \(int\), got \[4\] \(torch.float32\)"),
        ("old_logprobs", "short", r"old_logprobs: expected shape \[batch=4, seq=\d+\]"),
        ("rewards", torch.tensor([0.0, float("nan"), 1.0, 0.0], dtype=torch.float64), r"rewards: non-finite value nan at sample 1"),
        ("rewards", torch.tensor([0.0, 1.0, 1.0, float("inf")], dtype=torch.float64), r"rewards: non-finite value inf at sample 3"),
        ("chosen", [True, False, True, False], r"chosen: expected a bool tensor \[batch=4\], got list"),
    ],
)
def test_rollout_rejects_bad_fields(field, value, message):
    r = _base()
    if value == "ones_long":
        value = r.completion_mask.long()
    elif value == "short":
        value = torch.zeros(4, r.input_ids.shape[1] - 1, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=message):
        r.replace(**{field: value})


def test_nan_old_logprob_on_an_output_token_is_named():
    r = _base()
    b, t = r.completion_mask.nonzero()[0].tolist()
    old = torch.zeros(r.input_ids.shape, dtype=torch.float64)
    old[b, t] = float("nan")
    with pytest.raises(ValueError, match=rf"old_logprobs: non-finite value nan at sample {b}, position {t}"):
        r.replace(old_logprobs=old)


def test_completion_at_position_zero_or_on_padding_is_rejected():
    r = _base()
    bad = r.completion_mask.clone()
    bad[2, 0] = True
    with pytest.raises(ValueError, match="sample 2 marks position 0 as output"):
        r.replace(completion_mask=bad, attention_mask=r.attention_mask | bad)
    pad = (~r.attention_mask).nonzero()[0].tolist()
    bad = r.completion_mask.clone()
    bad[pad[0], pad[1]] = True
    with pytest.raises(ValueError, match=f"sample {pad[0]} marks a padding token"):
        r.replace(completion_mask=bad)


def test_grpo_group_of_size_one():
    r = _base().replace(group_ids=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"group 1 \(sample 2\) has 1 sample\(s\)"):
        url.methods.grpo(beta=0.0).coefficient.prepare(with_policy_logprobs(MODEL, r, 0))


def test_dpo_pair_without_its_partner():
    r = with_policy_logprobs(MODEL, _base(), 0).replace(group_ids=torch.tensor([0, 0, 1, 2]), chosen=torch.tensor([True, False, True, False]))
    with pytest.raises(ValueError, match=r"pair 1 \(sample 2\) has 1 sequence\(s\)"):
        url.methods.dpo().coefficient.prepare(r)
    r = r.replace(group_ids=torch.tensor([0, 0, 1, 1]), chosen=torch.tensor([True, True, True, False]))
    with pytest.raises(ValueError, match=r"pair 0 \(sample 0\) has 2 chosen"):
        url.methods.dpo().coefficient.prepare(r)


def test_missing_ref_logprobs_when_beta_positive():
    r = with_policy_logprobs(MODEL, _base(), 0).replace(ref_logprobs=None)
    with pytest.raises(ValueError, match=r"kl_k3\(beta=0.04\) needs Rollout.ref_logprobs"):
        url.methods.grpo(beta=0.04).coefficient.prepare(r)
    url.methods.grpo(beta=0.0).coefficient.prepare(r)  # beta = 0: no reference needed
    with pytest.raises(ValueError, match=r"ppo_clip\(epsilon=0.2, epsilon_high=0.2\) needs Rollout.old_logprobs"):
        url.methods.grpo(beta=0.0).coefficient.prepare(r.replace(old_logprobs=None))
    with pytest.raises(ValueError, match=r"group_normalized\(\) needs Rollout.rewards"):
        url.methods.grpo().coefficient.prepare(r.replace(rewards=None))


def test_backward_without_prepare_and_ppo_without_its_critic_s_values():
    r = _base()
    with pytest.raises(ValueError, match="call coefficient.prepare"):
        url.engine.backward(MODEL, r, url.methods.sft().coefficient)
    with pytest.raises(ValueError, match=r"gae\(kl_beta=0.04\) needs Rollout.values, which is None"):
        url.methods.ppo().coefficient.prepare(with_policy_logprobs(MODEL, r, 0))


def test_overflowing_ratio_is_an_error_not_a_nan():
    r = with_policy_logprobs(MODEL, _base(), 0)
    r = r.replace(old_logprobs=torch.where(r.completion_mask, -1e4, 0.0).double())
    coef = url.methods.grpo(beta=0.0, epsilon=1e9).coefficient  # nothing clips: rho = e^(~1e4) = inf
    with pytest.raises(FloatingPointError, match=r"gradient coefficient is -?inf at sample \d+, position \d+"):
        url.engine.backward(MODEL, coef.prepare(r), coef)


def test_empty_completion_contributes_exactly_zero():
    r = with_policy_logprobs(MODEL, random_rollout(2, n_groups=2, group_size=3, allow_empty=True), 2)
    m = r.completion_mask.clone()
    m[1] = False
    r = r.replace(completion_mask=m, old_logprobs=torch.where(m, r.old_logprobs, 0.0), ref_logprobs=torch.where(m, r.ref_logprobs, 0.0))
    for method in (url.methods.sft(), url.methods.grpo(), url.methods.rft()):
        prepared = method.coefficient.prepare(r)
        assert bool((prepared.weights[1] == 0).all())
        MODEL.zero_grad()
        stats = url.engine.backward(MODEL, prepared, method.coefficient)
        assert all(torch.isfinite(p.grad).all() for p in MODEL.parameters())
        assert bool((stats.gc[1] == 0).all())


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="group_size"):
        url.methods.grpo(group_size=1)
    with pytest.raises(ValueError, match="supervision must be one of"):
        url.methods.grpo(supervision="outcomes")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        url.methods.grpo(beta=-0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        url.methods.dpo(beta=0.0)
    with pytest.raises(ValueError, match="lam must be in"):
        url.methods.ppo(lam=1.5)
