"""The chunked loss head equals plain full-logits log_softmax, in value and in gradient."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import grads, random_rollout, shared_prompt_rollout, tiny_arch, tiny_model, true_logprobs
from unified_rl.hf.logprobs import completion_logprobs
from unified_rl.lm_head import linear_logprobs
from unified_rl.hf.prefix import plan_shared_prefix, supports_shared_prefix


@given(seed=st.integers(0, 10_000), chunk_rows=st.integers(1, 9), temperature=st.sampled_from([1.0, 0.7]), bias=st.booleans())
def test_linear_logprobs_matches_log_softmax(seed, chunk_rows, temperature, bias):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(13, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    t = torch.randint(0, 11, (13,), generator=g)
    up = torch.randn(13, dtype=torch.float64, generator=g)
    out = linear_logprobs(h, w, b, t, temperature=temperature, chunk_bytes=chunk_rows * 4 * 11)
    logits = (h @ w.T + (b if b is not None else 0)) / temperature
    ref = logits.log_softmax(-1).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    params = [h, w] + ([b] if bias else [])
    g1 = torch.autograd.grad((out * up).sum(), params)
    g2 = torch.autograd.grad((ref * up).sum(), params)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tie", [False, True])
def test_completion_logprobs_matches_full_logits(tie):
    model = tiny_model(tie=tie)
    r = random_rollout(3, n_groups=3)
    ours = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, chunk_bytes=4 * 23 * 3)
    ours.sum().backward()
    g_ours = grads(model)
    model.zero_grad()
    ref = true_logprobs(model, r)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_ours, grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_left_padding_gives_same_logprobs():
    """Position ids follow the attention mask, so left-padding a row changes nothing."""
    model = tiny_model()
    r = random_rollout(5, n_groups=1, group_size=1)
    ids, attn, comp = r.input_ids, r.attention_mask, r.completion_mask
    pad = 3
    left = lambda x, v: torch.cat([torch.full((1, pad), v, dtype=x.dtype), x], 1)  # noqa: E731
    a = completion_logprobs(model, ids, attn, comp)
    b = completion_logprobs(model, left(ids, 0), left(attn, False), left(comp, False))
    torch.testing.assert_close(a, b[:, pad:], rtol=1e-10, atol=1e-12)


def test_nonlinear_head_falls_back_to_full_logits():
    model = tiny_model()
    model.config.logit_scale = 1.0  # plain: still the fast path
    r = random_rollout(1)
    fast = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    model.config.final_logit_softcapping = 30.0  # Llama ignores it; our path must not assume linear
    slow = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["qwen2", "gpt2", "mistral"])
def test_other_transformers_architectures(kind):
    """The split trunk/head path works beyond Llama (GPT-2's trunk is `transformer`, not `model`)."""
    model = tiny_arch(kind)
    r = random_rollout(4)
    ours = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    torch.testing.assert_close(ours, true_logprobs(model, r), rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_engine_on_cuda_in_bf16_matches_cpu_fp32():
    import unified_rl as url
    from helpers import with_policy_logprobs

    cpu = tiny_model().float()
    r = with_policy_logprobs(cpu.double(), random_rollout(6), 6)
    cpu = cpu.float()
    method = url.methods.grpo(beta=0.04)
    prepared = method.coefficient.prepare(r)
    url.engine.backward(cpu, prepared, method.coefficient)
    gpu = tiny_model().to("cuda", torch.bfloat16)
    stats = url.engine.backward(gpu, prepared.to("cuda"), method.coefficient)
    assert stats.logprobs.dtype == torch.float32  # fp32 log-softmax accumulation
    for a, b in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(b.grad.float().cpu(), a.grad, rtol=0.1, atol=2e-2)


@given(seed=st.integers(0, 10_000), group_size=st.integers(2, 4), allow_empty=st.booleans(), kind=st.sampled_from(["llama", "qwen2"]))
@settings(max_examples=25, deadline=None)
def test_shared_prompt_pass_equals_per_row_pass(seed, group_size, allow_empty, kind):
    """Running each distinct prompt once and handing its KV cache to its rows gives the same
    log-probs and the same gradients as running every row in full (fp64)."""
    model = tiny_model() if kind == "llama" else tiny_arch("qwen2")
    r = shared_prompt_rollout(seed, n_groups=3, group_size=group_size, allow_empty=allow_empty)
    assert plan_shared_prefix(r.input_ids, r.attention_mask, r.completion_mask) is not None
    up = torch.randn(r.input_ids.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = {}
    for share in (True, False):
        model.zero_grad()
        lp = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=share, chunk_bytes=4 * 23 * 5)
        (lp * up).sum().backward()
        out[share] = lp.detach(), grads(model)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[True][0], true_logprobs(model, r).detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_shared_prompt_plan():
    r = shared_prompt_rollout(0, n_groups=2, group_size=3)
    plan = plan_shared_prefix(r.input_ids, r.attention_mask, r.completion_mask)
    assert plan.prefix_ids.shape[0] == 2 and plan.row_prefix.tolist() == [0, 0, 0, 1, 1, 1]
    assert plan_shared_prefix(*(x[[0, 3]] for x in (r.input_ids, r.attention_mask, r.completion_mask))) is None  # nothing shared
    left = torch.cat([torch.zeros_like(r.attention_mask[:, :1]), r.attention_mask[:, :-1]], 1)
    assert plan_shared_prefix(r.input_ids, left, r.completion_mask & left) is None  # not right-padded: per-row path
    gpt2 = tiny_arch("gpt2")
    assert not supports_shared_prefix(gpt2) and supports_shared_prefix(tiny_model())
    checkpointed = tiny_model().train()
    _checkpoint(checkpointed)  # non-reentrant (transformers' default): prompts shared
    assert supports_shared_prefix(checkpointed) and supports_shared_prefix(checkpointed.eval())
    _checkpoint(checkpointed.train(), reentrant=True)  # no gradient into a read cache: per-row path
    assert not supports_shared_prefix(checkpointed)
    assert supports_shared_prefix(checkpointed.eval())  # an eval-mode copy (the reference) runs its layers with the cache


def test_a_checkpointed_model_in_eval_mode_shares_its_prompts_exactly():
    """The reference is an eval-mode copy of the policy, checkpointing flag included: its prompts run
    once per group, with the log-probs of the per-row pass (fp64) and of the model without checkpointing."""
    r = shared_prompt_rollout(3, n_groups=3, group_size=4)
    model = tiny_model().eval()
    with torch.no_grad():
        plain = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=False)
        _checkpoint(model)
        shared = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=True)
    assert supports_shared_prefix(model)
    torch.testing.assert_close(shared, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("max_tokens", [None, 20])
def test_a_checkpointed_model_in_training_shares_its_prompts_exactly(max_tokens, reentrant):
    """Under activation checkpointing in training, the engine's GRPO gradient (one call, or micro-batches
    reading the prompts run once for the batch) equals the model's without checkpointing, per-row
    pass, in fp64: non-reentrant checkpointing shares the prompts, reentrant takes the per-row path."""
    import unified_rl as url

    r = shared_prompt_rollout(5, n_groups=3, group_size=4, prompt_max=6)
    grpo = url.methods.grpo(group_size=4).coefficient
    with torch.no_grad():
        prepared = grpo.prepare(r.replace(old_logprobs=true_logprobs(tiny_model(), r), ref_logprobs=true_logprobs(tiny_model(seed=1), r)))
    out = {}
    for name, checkpointing, share in (("plain", False, False), ("checkpointed", True, True)):
        model = tiny_model().train()
        if checkpointing:
            _checkpoint(model, reentrant)
            assert supports_shared_prefix(model) is not reentrant
        stats = url.engine.backward(model, prepared, grpo, url.ExecutionPlan(max_tokens=max_tokens, share_prefix=share))
        out[name] = stats.loss, grads(model)
    assert out["checkpointed"][0] == pytest.approx(out["plain"][0], rel=1e-12, abs=1e-14)
    for a, b in zip(out["checkpointed"][1], out["plain"][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # log-probs of the training-mode model without grad (pi_old): the same values
        shared = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=True)
        per_row = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=False)
    torch.testing.assert_close(shared, per_row, rtol=1e-12, atol=1e-12)


def _checkpoint(model, reentrant=None) -> None:
    """Activation checkpointing on ``model``, by the name the installed transformers gives it
    (``reentrant`` None: transformers' default)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable() if reentrant is None else enable({"use_reentrant": reentrant})
