"""Padding-free training: a micro-batch's rows packed into one sequence (positions restarting per
row, transformers' packed-sequence mask) give the padded computation's log-probs and, for every
registered method, its parameter gradients (fp64); through the real command too."""

import copy
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

import unified_rl as url
from unified_rl.hf import completion_logprobs
from helpers import registered, teacher_for, with_critic
from unified_rl.methods import REGISTRY

from helpers import run_cli as run
from helpers import assert_grads_close, grads, random_rollout, tiny_arch, tiny_model, with_policy_logprobs, with_steps

MODEL = tiny_model()


@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["llama", "qwen2", "qwen3", "mistral"]), left=st.booleans())
@settings(max_examples=25, deadline=None)
def test_packed_logprobs_equal_padded(seed, kind, left):
    model = tiny_model() if kind == "llama" else tiny_arch(kind)
    r = random_rollout(seed, n_groups=3, group_size=2)
    if left:  # the same rows left-padded, as samplers write them
        ids, attn, comp = (torch.stack([t[i].roll(int((~r.attention_mask[i]).sum())) for i in range(r.batch_size)])
                           for t in (r.input_ids, r.attention_mask, r.completion_mask))
        r = url.Rollout(ids, attn, comp, group_ids=r.group_ids, rewards=r.rewards)
    up = torch.randn(r.input_ids.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = {}
    for packed in (False, True):
        model.zero_grad()
        lp = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask, share_prefix=False, packed=packed)
        (lp * up).sum().backward()
        out[packed] = (lp.detach(), grads(model))
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    assert_grads_close(out[True][1], out[False][1], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("max_tokens", [None, 20])
def test_every_method_packed_gradient_equals_padded(name, max_tokens):
    r = with_steps(with_policy_logprobs(MODEL, random_rollout(5, n_groups=3, group_size=2), 5), 5)
    r = r.replace(chosen=torch.arange(6) % 2 == 0, truncated=torch.arange(6) % 3 == 0, teacher_logprobs=r.ref_logprobs - 0.5 * r.old_logprobs)
    if name == "kto":  # a labelled row and a kl row per group, desirable and undesirable rows both present
        r = r.replace(chosen=torch.arange(6) % 4 == 0, kl_sample=torch.arange(6) % 2 == 1)
    method = registered(name, max_new_tokens=12, group_size=2)
    prepared = method.coefficient.prepare(with_critic(method, r, copy.deepcopy(MODEL))[0])  # PPO's values; nothing for the others
    out = []
    for packed in (False, True):
        MODEL.zero_grad()
        url.engine.backward(MODEL, prepared, method.coefficient, url.ExecutionPlan(max_tokens=max_tokens, share_prefix=False, packed=packed),
                            models=teacher_for(method, lambda: tiny_model(7)))
        out.append(grads(MODEL))
    assert any(float(g.abs().sum()) > 0 for g in out[0])
    assert_grads_close(out[1], out[0], rtol=1e-10, atol=1e-13)


def test_a_row_that_starts_with_output_is_refused():
    ids = torch.tensor([[0, 5, 6], [4, 5, 6]])
    attn = torch.tensor([[False, True, True], [True, True, True]])
    with pytest.raises(ValueError, match=r"sample 0 marks its first real token \(position 1\) as output"):
        url.Rollout(ids, attn, torch.tensor([[False, True, True], [False, True, True]]))


def test_packed_through_the_command(tmp_path):
    metrics = {}
    for packed in ("false", "true"):
        proc = run(["train", "--method", "grpo", "--steps", "1", "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "16",
                    "--share-prefix", "false", "--packed", packed, "--out", packed, "--no-progress"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics[packed] = [json.loads(x) for x in (tmp_path / packed / "metrics.jsonl").read_text().splitlines()][0]
    for key in ("loss", "grad_norm", "kl/k3", "reward/mean"):
        assert metrics["true"][key] == pytest.approx(metrics["false"][key], rel=1e-5, abs=1e-7), key
