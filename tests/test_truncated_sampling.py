"""Top-k / top-p sampling with exact log-probs. The samplers draw from the truncated distribution but
record each token's log-prob over the whole vocabulary -- the trainer's log pi of it -- so on-policy
the importance ratio is 1 (a record renormalised over the kept tokens would be off by the kept mass)."""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

import unified_rl as url
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
from unified_rl.data import Encoder, SampledSource
from unified_rl.hf import HFSampler, StaticCacheSampler, tiny_llama
from unified_rl.hf.sampling import truncated

from helpers import run_cli as run

TOK = char_tokenizer()


@given(seed=st.integers(0, 10_000), top_k=st.integers(0, 30), top_p=st.sampled_from([1.0, 0.95, 0.9, 0.5, 0.1]))
@settings(max_examples=60, deadline=None)
def test_the_kept_tokens_are_transformers_own(seed, top_k, top_p):
    """The tokens kept are exactly those transformers' TopK then TopP warpers keep (ties included)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 23, generator=g, dtype=torch.float64) * 3
    logits[0, :5] = logits[0, 5]  # ties
    lp = torch.log_softmax(logits, -1)
    scores = lp.clone()
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    ours = truncated(lp, top_k, top_p)
    assert torch.equal(ours > 0, scores > -float("inf"))
    torch.testing.assert_close(ours[ours > 0], lp.exp()[ours > 0], rtol=0, atol=0)  # kept tokens keep their probability


def _draw(sampler, model, n=6, group=4, new=12):
    rows = ArithmeticTask().train_rows(n)
    src = SampledSource(rows, Encoder(TOK), sampler, samples_per_question=group, max_new_tokens=new, seed=3)
    return src.sample(model, n)


@pytest.mark.parametrize("sampler", [StaticCacheSampler(1, 0, top_k=3), StaticCacheSampler(1, 0, top_k=4, top_p=0.8),
                                     HFSampler(1, 0, top_k=3), HFSampler(1, 0, top_p=0.7)], ids=["static-k", "static-kp", "hf-k", "hf-p"])
def test_on_policy_ratio_is_one_with_truncated_sampling(sampler):
    torch.manual_seed(0)
    model = tiny_llama(len(TOK), hidden=64, layers=2, heads=2, intermediate=128).eval()
    r = _draw(sampler, model)
    logp = url.engine.logprobs(model, r)
    m = r.completion_mask
    ratio = torch.exp(logp[m].double() - r.sampler_logprobs[m].double())
    assert float((ratio - 1).abs().max()) < 1e-5
    # every sampled token lies in the kept set, and the kept mass is far from 1: a renormalised record would be off
    with torch.no_grad():
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1].double()
    full = torch.log_softmax(logits, -1)[m[:, 1:]]
    keep = truncated(full, sampler.top_k, sampler.top_p) > 0
    tokens = r.input_ids[:, 1:][m[:, 1:]]
    assert bool(keep.gather(1, tokens[:, None]).all())
    kept_mass = full.exp().masked_fill(~keep, 0).sum(-1)
    assert float(kept_mass.log().abs().mean()) > 0.05


def test_top_k_through_the_command_gives_ratio_one(tmp_path):
    proc = run(["train", "--method", "grpo", "--steps", "2", "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "12",
                "--top-k", "3", "--top-p", "0.9", "--out", "o", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if "ratio/mean" in m]
    assert steps and all(abs(m["ratio/mean"] - 1) < 1e-6 and m["gc/frac_clipped"] == 0 for m in steps)


@pytest.mark.parametrize("flags, message", [
    (["--top-k", "-1"], "config field 'top_k' = -1: must be an integer >= 0"),
    (["--top-p", "0"], "config field 'top_p' = 0.0: must be a number in (0, 1]"),
    (["--top-p", "1.5"], "config field 'top_p' = 1.5: must be a number in (0, 1]"),
    (["--sampler", "vllm", "--top-k", "5", "--temperature", "0.7"], "config field 'temperature' = 0.7: must be 1 with top_k/top_p"),
])
def test_bad_truncation_settings_are_one_line(tmp_path, flags, message):
    proc = run(["train", "--method", "grpo", "--steps", "1", "--out", "o"] + flags, tmp_path)
    assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1], proc.stderr[-1500:]
