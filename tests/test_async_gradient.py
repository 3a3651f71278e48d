"""Stale samples: a batch sampled by the policy K = 1 or 2 updates back (real AdamW updates), trained
on by the current one. The engine's gradient for each staleness correction equals the peer's loss
written plainly (fp64, 1e-10): AReaL's decoupled PPO (``ppo_actor_loss_fn``), token-level truncated
importance sampling, prime-rl's masked importance sampling (``default_loss_fn``), and TRL's
``AsyncGRPOTrainer.compute_loss`` itself, run on the same batch."""

import copy
import types
from collections import defaultdict

import pytest
import torch
from hypothesis import given, strategies as st

import unified_rl as url
import unified_rl.coefficients as C
from helpers import ALL_AGGREGATIONS, check_gc, filled, grads, random_rollout, tiny_model, true_logprobs

EPS = 0.2


def _behaviour(r, seed, spread):
    """Behaviour log-probs ``spread`` away from pi_old (a stale sampler's)."""
    g = torch.Generator().manual_seed(seed + 11)
    noise = spread * torch.randn(r.input_ids.shape, generator=g, dtype=torch.float64)
    return r.replace(sampler_logprobs=torch.where(r.completion_mask, r.old_logprobs + noise, 0.0))


@given(seed=st.integers(0, 100_000), agg=st.sampled_from(ALL_AGGREGATIONS), cap=st.one_of(st.none(), st.floats(1.05, 4.0)),
       spread=st.floats(0.0, 1.5))
def test_decoupled_ppo_gc_is_the_gradient_of_its_objective(seed, agg, cap, spread):
    r, logp = filled(seed, agg, allow_empty=True)
    check_gc(C.decoupled_ppo(EPS, cap=cap), _behaviour(r, seed, spread), logp, nontrivial=cap is None)


@given(seed=st.integers(0, 100_000), agg=st.sampled_from(ALL_AGGREGATIONS), spread=st.floats(0.0, 1.5),
       low=st.floats(0.05, 0.9), high=st.floats(1.1, 10.0))
def test_masked_importance_gc_is_the_gradient_of_its_objective(seed, agg, spread, low, high):
    r, logp = filled(seed, agg, allow_empty=True)
    check_gc(C.masked_importance(low, high, low, high), _behaviour(r, seed, spread), logp, nontrivial=False)


def test_staleness_pieces_refuse_bad_bounds():
    with pytest.raises(ValueError, match="cap must be > 1"):
        C.decoupled_ppo(0.2, cap=0.5)
    with pytest.raises(ValueError, match="need 0 <= low <= high"):
        C.masked_importance(token_low=2.0, token_high=1.0)


def _stale(k: int, seed: int = 0):
    """(current policy, batch): the batch's tokens scored by the behaviour policy (K updates back) as
    ``sampler_logprobs`` and by the current one as ``old_logprobs`` (the proximal policy)."""
    behaviour = tiny_model(seed)
    current = copy.deepcopy(behaviour)
    opt = torch.optim.AdamW(current.parameters(), lr=0.05)
    grpo = C.chain(C.group_normalized(), C.ppo_clip(EPS), aggregation=C.token_mean())
    for step in range(k):  # K real updates on batches of their own
        r = random_rollout(100 + step, n_groups=3, group_size=4, completion_max=8)
        with torch.no_grad():
            lp = true_logprobs(current, r)
        prepared = grpo.prepare(r.replace(old_logprobs=lp))
        opt.zero_grad()
        url.engine.backward(current, prepared, grpo)
        opt.step()
    r = random_rollout(seed + 7, n_groups=3, group_size=4, completion_max=8)
    with torch.no_grad():
        r = r.replace(sampler_logprobs=true_logprobs(behaviour, r), old_logprobs=true_logprobs(current, r))
    w = torch.exp(r.old_logprobs - r.sampler_logprobs)[r.completion_mask]
    assert (w - 1).abs().max() > 0.3, "the updates must move the policy enough for the corrections to matter"
    return current, r


def _ours(model, r, term):
    coef = C.chain(C.group_normalized(), term, aggregation=C.token_mean())
    prepared = coef.prepare(r)
    model.zero_grad(set_to_none=True)
    url.engine.backward(model, prepared, coef)
    return prepared, grads(model)


def _plain(model, loss_of):
    model.zero_grad(set_to_none=True)
    loss_of(true_logprobs(model, _plain.rollout)).backward()
    return grads(model)


def _same(a, b):
    assert any(float(x.abs().max()) > 1e-6 for x in b), "the peer's gradient is zero"
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-13)


def _areal(logp, prox, behav, adv, mask, cap):
    """AReaL ``ppo_actor_loss_fn`` (areal/utils/functional.py), token level, no dual clip, decoupled."""
    ratio = torch.where(mask, torch.exp(logp - prox), 0)
    pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - EPS, 1 + EPS))
    w = torch.exp(prox - behav)
    keep = (w <= cap) & mask if cap is not None else mask
    pg = pg * torch.where(keep, w, 0.0)
    return torch.where(mask, pg, 0).sum() / mask.count_nonzero()


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("cap", [None, 1.5])
def test_decoupled_ppo_is_areal_s_loss(k, cap):
    model, r = _stale(k)
    prepared, ours = _ours(model, r, C.decoupled_ppo(EPS, cap=cap))
    _plain.rollout = prepared
    m = prepared.completion_mask
    peer = _plain(model, lambda lp: _areal(lp, prepared.old_logprobs, prepared.sampler_logprobs, prepared.advantages, m, cap))
    _same(ours, peer)
    if cap is not None:
        assert (torch.exp(prepared.old_logprobs - prepared.sampler_logprobs)[m] > cap).any(), "the cap must drop tokens"


@pytest.mark.parametrize("k", [1, 2])
def test_truncated_importance_sampling_is_the_plain_tis_loss(k):
    model, r = _stale(k)
    c = 1.3
    prepared, ours = _ours(model, r, C.corrected(C.ppo_clip(EPS), C.sampler_correction("token_truncate", c_max=c)))
    _plain.rollout = prepared
    m = prepared.completion_mask

    def tis(lp):  # verl's TIS: min(pi_old / pi_behaviour, C) times PPO's clipped surrogate, token mean
        ratio = torch.exp(lp - prepared.old_logprobs)
        adv = prepared.advantages
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - EPS, 1 + EPS))
        w = torch.exp(prepared.old_logprobs - prepared.sampler_logprobs).clamp(max=c)
        return (pg * w)[m].sum() / m.sum()

    _same(ours, _plain(model, tis))


@pytest.mark.parametrize("k", [1, 2])
def test_masked_importance_is_prime_rl_s_loss(k):
    model, r = _stale(k)
    bounds = dict(token_low=0.5, token_high=2.0, geo_low=0.8, geo_high=1.25)  # tight, so both masks drop something here
    prepared, ours = _ours(model, r, C.masked_importance(**bounds))
    _plain.rollout = prepared
    m = prepared.completion_mask

    def prime(lp):  # prime_rl/trainer/rl/loss.py default_loss_fn per sequence, kl_tau = 0, summed / tokens
        total = 0.0
        for i in range(lp.shape[0]):
            mi = m[i]
            log_ratio = (lp[i] - prepared.sampler_logprobs[i])[mi]
            ratio = torch.exp(log_ratio)
            geo = torch.exp(log_ratio.mean())
            masked = (ratio < bounds["token_low"]) | (ratio > bounds["token_high"]) | (geo < bounds["geo_low"]) | (geo > bounds["geo_high"])
            coeff = ratio * prepared.advantages[i][mi]
            total = total - (coeff.detach() * lp[i][mi])[~masked].sum()
        return total / m.sum()

    _same(ours, _plain(model, prime))
    w = C.MaskedImportance(**bounds).weight(prepared, torch.float64)[m]
    assert 0 < int((w == 0).sum()) < int(m.sum()), "the masks must drop some tokens and keep others"


class _Packed(torch.nn.Module):
    """TRL's async trainer calls its patched model on one packed row (positions restart per sample)
    and reads ``log_probs`` / ``entropy`` at each position's next token; this runs a plain model on
    each packed sample to give the same outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, shift_labels, fused_lm_head=True, **_tree):
        starts = (position_ids[0] == 0).nonzero().squeeze(1).tolist() + [input_ids.shape[1]]
        lps, ents = [], []
        for a, b in zip(starts[:-1], starts[1:]):
            logits = self.model(input_ids=input_ids[:, a:b]).logits.double()
            logsm = torch.log_softmax(logits, -1)
            labels = shift_labels[:, a:b]
            lps.append(logsm.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1))
            ents.append(-(logsm.exp() * logsm).sum(-1))
        return types.SimpleNamespace(log_probs=torch.cat(lps, 1), entropy=torch.cat(ents, 1))


def _trl_inputs(r):
    """The rollout as TRL's async collator lays it out: real tokens packed into one row, the output
    tokens selected by ``token_index`` (the position that predicts each)."""
    ids, pos, labels, index, old, adv, seg = [], [], [], [], [], [], []
    for i in range(r.batch_size):
        n = int(r.attention_mask[i].sum())
        row = r.input_ids[i, :n].tolist()
        for t in range(n):
            if r.completion_mask[i, t]:
                index.append(len(ids) + t - 1)
                old.append(float(r.sampler_logprobs[i, t]))
                adv.append(float(r.advantages[i, t]))
                seg.append(i)
        ids += row
        pos += list(range(n))
        labels += row[1:] + [-100]
    t = lambda v, dt=torch.long: torch.tensor([v], dtype=dt)  # noqa: E731
    n_tok = len(index)
    return {"input_ids": t(ids), "position_ids": t(pos), "shift_labels": t(labels), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "token_index": t(index), "old_log_probs": t(old, torch.float64), "advantages": t(adv, torch.float64), "segment_id": t(seg),
            "tree_kv_index": t([-1]), "tree_cu_seqlens_q": t([-1]), "tree_cu_seqlens_k": t([-1]), "tree_max_seqlens": t([0, 0]),
            "global_n_tokens": torch.tensor([n_tok], dtype=torch.float64), "global_n_forward_tokens": torch.tensor([len(ids)]),
            "mean_seq_len": torch.tensor([len(ids) / r.batch_size], dtype=torch.float64)}  # one value per batch


@pytest.mark.parametrize("k", [1, 2])
def test_no_correction_is_trl_async_grpo_s_own_loss(k):
    pytest.importorskip("trl", reason="TRL (a [dev] dependency) is the peer compared with")
    from trl.experimental.async_grpo.async_grpo_trainer import AsyncGRPOTrainer

    model, r = _stale(k)
    r = r.replace(old_logprobs=r.sampler_logprobs)  # TRL: pi_old is the behaviour policy, no weight
    prepared, ours = _ours(model, r, C.ppo_clip(EPS))
    acc = types.SimpleNamespace(num_processes=1, reduce=lambda x, reduction="sum": x, gather=lambda x: x)
    peer_self = types.SimpleNamespace(epsilon_low=EPS, epsilon_high=EPS, accelerator=acc, current_gradient_accumulation_steps=1,
                                      aux_loss_enabled=False, _metrics={"train": defaultdict(list)}, _step_forward_tokens=0.0,
                                      _step_trained_tokens=0.0, _step_seq_len_weighted=0.0, _step_samples=0.0, _step_forward_s=0.0)
    model.zero_grad(set_to_none=True)
    AsyncGRPOTrainer.compute_loss(peer_self, _Packed(model), _trl_inputs(prepared)).backward()
    _same(ours, grads(model))
    clipped = peer_self._metrics["train"]["clip_ratio/region_mean"][0]
    assert clipped > 0, "the stale batch must clip some tokens"
