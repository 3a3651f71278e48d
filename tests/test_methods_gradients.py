"""For every method: engine.backward's parameter gradients on a tiny random transformers model
equal autograd of the canonical loss, written plainly here (fp64)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import unified_rl as url
from helpers import assert_grads_close, grads, random_rollout, tiny_model, true_logprobs, with_critic, with_policy_logprobs, with_steps

MODEL = tiny_model()


def _engine_grads(method, rollout, **kw):
    MODEL.zero_grad()
    prepared = method.coefficient.prepare(rollout)
    stats = url.engine.backward(MODEL, prepared, method.coefficient, url.ExecutionPlan(**kw))
    return grads(MODEL), stats, prepared


def _canonical_grads(loss_fn, rollout):
    MODEL.zero_grad()
    loss_fn(true_logprobs(MODEL, rollout), rollout).backward()
    return grads(MODEL)


def _rows(r):
    for i in range(r.batch_size):
        m = r.completion_mask[i]
        yield i, m, int(m.sum())


def sft_loss(logp, r):
    return sum(-logp[i][m].sum() / n for i, m, n in _rows(r) if n) / r.batch_size


def rft_loss(logp, r):
    return sum(-(r.rewards[i] > 0.5).double() * logp[i][m].sum() / n for i, m, n in _rows(r) if n) / r.batch_size


def group_adv(r):
    """(r - mean) / std over each group (sample std); 0 for an all-equal group."""
    adv = torch.zeros(r.batch_size, dtype=torch.float64)
    for g in r.group_ids.unique():
        idx = (r.group_ids == g).nonzero().squeeze(1)
        x = r.rewards[idx]
        if x.max() > x.min():
            adv[idx] = (x - x.mean()) / x.std()
    return adv


def grpo_objective_loss(adv_per_token, beta, eps):
    def loss(logp, r):
        total = 0.0
        for i, m, n in _rows(r):
            if not n:
                continue
            lp, old, ref, a = logp[i][m], r.old_logprobs[i][m], r.ref_logprobs[i][m], adv_per_token(r)[i][m]
            rho = torch.exp(lp - old)
            surrogate = torch.minimum(rho * a, torch.clamp(rho, 1 - eps, 1 + eps) * a)
            kl = torch.exp(ref - lp) - (ref - lp) - 1
            total = total + (surrogate - beta * kl).sum() / n
        return -total / r.batch_size
    return loss


def outcome_tokens(r):
    return group_adv(r)[:, None].expand_as(r.completion_mask).double()


def process_tokens(r):
    """A_t = sum over steps j with index(j) >= t of the group-normalised step reward."""
    out = torch.zeros(r.input_ids.shape, dtype=torch.float64)
    for g in r.group_ids.unique():
        rows = (r.group_ids == g).nonzero().squeeze(1).tolist()
        all_steps = torch.cat([r.step_rewards[i][r.step_mask[i]] for i in rows])
        mean, std = all_steps.mean(), all_steps.std()
        for i in rows:
            for t in range(r.input_ids.shape[1]):
                if r.completion_mask[i, t]:
                    later = r.step_rewards[i, t:][r.step_mask[i, t:]]
                    out[i, t] = ((later - mean) / std).sum() if all_steps.max() > all_steps.min() else 0.0
    return out


@given(seed=st.integers(0, 100_000))
def test_sft(seed):
    r = random_rollout(seed)
    g_engine, _, _ = _engine_grads(url.methods.sft(), r)
    assert_grads_close(g_engine, _canonical_grads(sft_loss, r))


@given(seed=st.integers(0, 100_000), online=st.booleans())
def test_rft_and_online_rft(seed, online):
    r = random_rollout(seed)
    method = url.methods.online_rft() if online else url.methods.rft()
    g_engine, _, _ = _engine_grads(method, r)
    assert_grads_close(g_engine, _canonical_grads(rft_loss, r))


@given(seed=st.integers(0, 100_000), beta=st.sampled_from([0.0, 0.04, 0.5]), eps=st.sampled_from([0.1, 0.2]))
def test_grpo_outcome(seed, beta, eps):
    r = with_policy_logprobs(MODEL, random_rollout(seed), seed)
    g_engine, stats, _ = _engine_grads(url.methods.grpo(beta=beta, epsilon=eps), r)
    assert_grads_close(g_engine, _canonical_grads(grpo_objective_loss(outcome_tokens, beta, eps), r))
    assert 0.0 <= stats.metrics["gc/frac_clipped"] <= 1.0


@given(seed=st.integers(0, 100_000), beta=st.sampled_from([0.0, 0.04]))
def test_grpo_process(seed, beta):
    r = with_steps(with_policy_logprobs(MODEL, random_rollout(seed), seed), seed)
    g_engine, _, _ = _engine_grads(url.methods.grpo(beta=beta, supervision="process"), r)
    assert_grads_close(g_engine, _canonical_grads(grpo_objective_loss(process_tokens, beta, 0.2), r))


@given(seed=st.integers(0, 100_000), normalized=st.booleans(), beta=st.sampled_from([0.1, 0.5]))
def test_dpo(seed, normalized, beta):
    r = with_policy_logprobs(MODEL, random_rollout(seed, n_groups=3, group_size=2), seed)
    r = r.replace(chosen=torch.tensor([True, False, False, True, True, False]))

    def dpo_loss(logp, r):
        total = 0.0
        for g in range(3):
            ell = {}
            for i in (2 * g, 2 * g + 1):
                m = r.completion_mask[i]
                s = (logp[i][m] - r.ref_logprobs[i][m]).sum()
                ell[bool(r.chosen[i])] = s / int(m.sum()) if normalized else s
            total = total - F.logsigmoid(beta * (ell[True] - ell[False]))
        return total / 3

    g_engine, stats, _ = _engine_grads(url.methods.dpo(beta=beta, length_normalized=normalized), r)
    assert_grads_close(g_engine, _canonical_grads(dpo_loss, r))
    with torch.no_grad():
        assert math.isclose(stats.metrics["dpo/loss"], float(dpo_loss(true_logprobs(MODEL, r), r)), rel_tol=1e-9)


@given(seed=st.integers(0, 100_000), eps=st.sampled_from([0.1, 0.2]))
def test_ppo_clipped_surrogate(seed, eps):
    """PPO's GC on the advantages its GAE produced equals the clipped surrogate's gradient."""
    r = with_policy_logprobs(MODEL, random_rollout(seed), seed)
    method = url.methods.ppo(epsilon=eps, beta=0.04)
    r, _ = with_critic(method, r, tiny_model(seed=1))
    g_engine, _, prepared = _engine_grads(method, r)

    def ppo_loss(logp, r):
        total = 0.0
        for i, m, n in _rows(r):
            rho = torch.exp(logp[i][m] - r.old_logprobs[i][m])
            a = prepared.advantages[i][m]
            total = total + torch.minimum(rho * a, rho.clamp(1 - eps, 1 + eps) * a).sum() / n
        return -total / r.batch_size

    assert_grads_close(g_engine, _canonical_grads(ppo_loss, r))


MICRO = {"sft": url.methods.sft, "grpo": url.methods.grpo, "dpo": url.methods.dpo, "rft": url.methods.rft,
         "grpo_process": lambda: url.methods.grpo(supervision="process"), "dr_grpo": lambda: url.methods.dr_grpo(12),
         "dapo_mask_truncated": lambda: url.methods.dapo(mask_truncated=True), "gspo": lambda: url.methods.gspo(0.2, 0.2),
         "luspo": lambda: url.methods.luspo(0.2, 0.2), "cispo": lambda: url.methods.cispo(1.1), "sapo": url.methods.sapo,
         "rloo": url.methods.rloo, "reinforce_pp": url.methods.reinforce_pp, "ipo": url.methods.ipo, "hinge": url.methods.hinge,
         "simpo": url.methods.simpo, "orpo": lambda: url.methods.orpo(0.5), "online_dpo": url.methods.online_dpo,
         "kto": lambda: url.methods.kto(0.5, 1.0, 0.7),
         "opd": lambda: url.methods.opd(0.5),
         "off_policy_masked": lambda: url.Method("opm", url.coefficients.chain(
             url.coefficients.group_normalized(), url.coefficients.gated(url.coefficients.ppo_clip(0.2, level="sequence"),
                                                                         url.coefficients.off_policy_mask(0.01)),
             aggregation=url.coefficients.token_mean(), name="opm"), url.data.Sampled(2))}


@pytest.mark.parametrize("max_tokens", [None, 1, 9, 20, 10_000])
@pytest.mark.parametrize("name", sorted(MICRO))
def test_micro_batches_sum_to_full_batch(name, max_tokens):
    r = with_steps(with_policy_logprobs(MODEL, random_rollout(11, n_groups=3, group_size=2), 11), 11)
    r = r.replace(chosen=torch.arange(6) % 2 == 0, truncated=torch.arange(6) % 3 == 0, teacher_logprobs=r.ref_logprobs - 0.5 * r.old_logprobs)
    if name == "kto":  # a labelled row and a kl row per group, desirable and undesirable rows both present
        r = r.replace(chosen=torch.arange(6) % 4 == 0, kl_sample=torch.arange(6) % 2 == 1)
    method = MICRO[name]()
    full, s_full, _ = _engine_grads(method, r)
    split, s_split, _ = _engine_grads(method, r, max_tokens=max_tokens)
    assert_grads_close(full, split, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(s_full.gc, s_split.gc, rtol=1e-12, atol=1e-14)
