"""KTO: TRL's own ``KTOTrainer._compute_loss`` gives the engine's parameter gradients in fp64; the
GC is the gradient of the loss written plainly; the mismatched rows are TRL's; bad batches raise."""

import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

import unified_rl as url
from unified_rl.data.unpaired import with_mismatched
from unified_rl.rollout import Sample
from helpers import assert_grads_close, grads, random_rollout, tiny_model, true_logprobs, with_policy_logprobs

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl = pytest.importorskip("trl", reason="TRL (a [dev] dependency) is the peer these tests compare with")
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402
from test_conformance_trl import _FusedHead, _assert_same, _flat_grads, _stub  # noqa: E402

MODEL = tiny_model(5)


def _kto_batch(seed: int, n: int = 5, noise: float = 0.3):
    """n labelled rows then their n mismatched rows, pi_old = the model's own log-probs (TRL takes
    the KL rows' log pi from the current model), pi_ref near them."""
    r = random_rollout(seed, n_groups=1, group_size=n, completion_max=7)
    prompts, completions = [], []
    for i in range(n):
        real = r.attention_mask[i]
        first = int(r.completion_mask[i].nonzero()[0, 0])
        prompts.append(r.input_ids[i][:first].tolist())
        completions.append(r.input_ids[i][real & r.completion_mask[i]].tolist())
    g = torch.Generator().manual_seed(seed)
    desirable = (torch.rand(n, generator=g) < 0.5).tolist()
    desirable[0], desirable[1] = True, False  # both kinds present
    texts = [Sample("q", "o")] * n
    out = with_mismatched(prompts, completions, desirable, pad_id=0, texts=texts)
    out = with_policy_logprobs(MODEL, out, seed, noise)
    with torch.no_grad():
        return out.replace(old_logprobs=true_logprobs(MODEL, out))


def _trl_inputs(r):
    n = r.batch_size // 2
    ref = (r.ref_logprobs * r.completion_mask).sum(-1)
    return {"input_ids": r.input_ids[:n], "attention_mask": r.attention_mask[:n].long(), "completion_mask": r.completion_mask[:n].long(),
            "KL_input_ids": r.input_ids[n:], "KL_attention_mask": r.attention_mask[n:].long(),
            "KL_completion_mask": r.completion_mask[n:].long(), "label": r.chosen[:n].clone(),
            "ref_logps": ref[:n], "ref_KL_logps": ref[n:]}


@pytest.mark.parametrize("beta,lam_d,lam_u,ref_shift", [(0.1, 1.0, 1.0, 0.0), (0.5, 1.33, 1.0, 0.0), (2.0, 1.0, 0.7, 0.0),
                                                         (0.1, 1.0, 1.0, 2.0)])
def test_kto_matches_trl_kto_trainer(beta, lam_d, lam_u, ref_shift):
    """ref_shift lowers pi_ref's log-probs of the KL rows so z0 > 0 (the clamp inactive); without it
    the clamp at 0 is exercised by some seeds (z0 is then exactly 0 on both sides)."""
    r = _kto_batch(int(beta * 10) + 3)
    n = r.batch_size // 2
    r = r.replace(ref_logprobs=r.ref_logprobs - ref_shift * (r.kl_sample[:, None] & r.completion_mask))
    method = url.methods.kto(beta, lam_d, lam_u)
    prepared = method.coefficient.prepare(r)
    MODEL.zero_grad(set_to_none=True)
    url.engine.backward(MODEL, prepared, method.coefficient)
    ours = _flat_grads(MODEL)
    stub = _stub(calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=beta, desirable_weight=lam_d,
                 undesirable_weight=lam_u, _total_train_tokens=0, _tp_size=1)
    stub._compute_kl_logps = lambda model, batch: KTOTrainer._compute_kl_logps(stub, model, batch)  # TRL's own, on the stub
    MODEL.zero_grad(set_to_none=True)
    KTOTrainer._compute_loss(stub, _FusedHead(MODEL), _trl_inputs(r), return_outputs=False).backward()
    _assert_same(ours, _flat_grads(MODEL))
    assert stub._metrics["train"]["kl"][-1] == pytest.approx(float(prepared.reference_point[0]), rel=1e-12, abs=1e-15)
    if ref_shift:
        assert float(prepared.reference_point[0]) > 0
    assert n == int((~r.kl_sample).sum())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), beta=st.sampled_from([0.1, 1.0]), lam_u=st.sampled_from([1.0, 0.5]))
def test_kto_gc_is_the_gradient_of_its_loss(seed, beta, lam_u):
    """The loss written plainly (fp64): mean over labelled rows of lambda (1 - sigma(+-beta (r - z0)))."""
    r = _kto_batch(seed, n=4)
    method = url.methods.kto(beta, 1.0, lam_u)
    prepared = method.coefficient.prepare(r)
    MODEL.zero_grad()
    url.engine.backward(MODEL, prepared, method.coefficient, url.ExecutionPlan(max_tokens=7))
    engine = grads(MODEL)
    with torch.no_grad():
        kl_ratio = ((r.old_logprobs - r.ref_logprobs) * r.completion_mask).sum(-1)[r.kl_sample].mean().clamp(min=0)
    MODEL.zero_grad()
    logp = true_logprobs(MODEL, r)
    rr = ((logp - r.ref_logprobs) * r.completion_mask).sum(-1)
    labelled = ~r.kl_sample
    loss = torch.where(r.chosen, 1 - torch.sigmoid(beta * (rr - kl_ratio)), lam_u * (1 - torch.sigmoid(beta * (kl_ratio - rr))))
    loss[labelled].mean().backward()
    assert_grads_close(engine, grads(MODEL), rtol=1e-10, atol=1e-13)


def test_mismatched_rows_are_trls_cycle():
    """Row i's question with row i-1's completion (the first with the last): TRL's add_kl_completion_ids."""
    prompts, completions = [[1, 2], [3], [4, 5, 6]], [[7], [8, 9], [10, 11, 12]]
    texts = [Sample(f"q{i}", f"o{i}") for i in range(3)]
    r = with_mismatched(prompts, completions, [True, False, True], pad_id=0, texts=texts)
    trl_kl = [completions[-1]] + completions[:-1]  # trl/trainer/kto_trainer.py: add_kl_completion_ids
    for i in range(3):
        row = 3 + i
        assert r.input_ids[row][r.attention_mask[row] & ~r.completion_mask[row]].tolist() == prompts[i]
        assert r.input_ids[row][r.completion_mask[row]].tolist() == trl_kl[i]
        assert r.texts[row] == Sample(f"q{i}", f"o{(i - 1) % 3}")
    assert r.kl_sample.tolist() == [False] * 3 + [True] * 3 and r.chosen.tolist() == [True, False, True, False, False, False]
    assert r.group_ids.tolist() == [0, 1, 2, 0, 1, 2]


def test_kto_errors_are_clear():
    r = _kto_batch(1)
    with pytest.raises(ValueError, match="no kl_sample row"):
        url.methods.kto().coefficient.prepare(r.replace(kl_sample=torch.zeros_like(r.kl_sample)))
    with pytest.raises(ValueError, match="needs Rollout.kl_sample"):
        url.methods.kto().coefficient.prepare(r.replace(kl_sample=None))
    with pytest.raises(ValueError, match="at least 2 labelled rows"):
        with_mismatched([[1]], [[2]], [True], pad_id=0, texts=[Sample("q", "o")])
    for bad in ({"beta": 0.0}, {"desirable_weight": -1.0}, {"undesirable_weight": 0.0}):
        with pytest.raises(ValueError, match="kto: "):
            url.methods.kto(**bad)
    kl_free = url.methods.kto().coefficient
    with pytest.raises(ValueError, match="call coefficient.prepare"):
        kl_free(r.replace(weights=torch.zeros(r.input_ids.shape, dtype=torch.float64)), r.old_logprobs)


def test_kto_metrics_are_trls():
    r = _kto_batch(9)
    coef = url.methods.kto(0.5).coefficient
    prepared = coef.prepare(r)
    m = coef.metrics(prepared, true_logprobs(MODEL, r).detach())
    reward = 0.5 * ((r.old_logprobs - r.ref_logprobs) * r.completion_mask).sum(-1)
    labelled = ~r.kl_sample
    assert m["kto/reward_desirable"] == pytest.approx(float(reward[labelled & r.chosen].mean()), rel=1e-12)
    assert m["kto/reward_undesirable"] == pytest.approx(float(reward[labelled & ~r.chosen].mean()), rel=1e-12)
    assert m["kto/reference_point"] == float(prepared.reference_point[0])


def test_sampled_kto_rows_are_labelled_by_the_reward_and_never_from_an_unscored_sample():
    """UnpairedSource: each scored sample is a row, desirable exactly when its reward is > 0.5; an
    unscored one is left out (counted in kto/unscored), then every row gets its mismatched row."""
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.data.unpaired import UnpairedSource

    class Judge(url.RewardFunction):
        def __call__(self, rollout, texts):  # sample 0 of each group right, 1 unscored, 2 wrong
            g = torch.arange(rollout.batch_size) % 3
            return rollout.replace(rewards=(g == 0).float(), scored=g != 1)

    class Fixed(url.DataSource):
        def sample(self, policy, n):
            r = random_rollout(4, n_groups=n, group_size=3)
            return r.replace(texts=tuple(Sample(f"q{i // 3}", f"o{i}") for i in range(r.batch_size)))

    source = UnpairedSource.__new__(UnpairedSource)
    source.sampled, source.judge, source.max_draws, source._left_out = Fixed(), Judge(), 1, 0
    source.sampled.encoder, source.sampled.temperature = url.data.Encoder(char_tokenizer()), 1.0
    rows = source.sample(None, 2)
    assert rows.batch_size == 8 and rows.kl_sample.tolist() == [False] * 4 + [True] * 4
    assert rows.chosen.tolist() == [True, False, True, False] + [False] * 4
    assert [t.completion for t in rows.texts[:4]] == ["o0", "o2", "o3", "o5"]  # the unscored o1 and o4 left out
    assert source.metrics() == {"kto/unscored": 2.0}
    original = random_rollout(4, n_groups=2, group_size=3)
    for row, src in zip(range(4), (0, 2, 3, 5)):  # each row's tokens are its sample's: prompt, then completion
        assert rows.input_ids[row][rows.completion_mask[row]].tolist() == original.input_ids[src][original.completion_mask[src]].tolist()
        prompt = rows.attention_mask[row] & ~rows.completion_mask[row]
        assert rows.input_ids[row][prompt].tolist() == original.input_ids[src][original.attention_mask[src] & ~original.completion_mask[src]].tolist()
