"""precision="bf16": autocast matmuls, fp32 weights / optimizer / log-softmax. The chunked loss
head must give the same log-probs and gradients as a plain bf16-autocast full-logits head
(both differ from fp32 only by bf16 rounding), and the loop must train in bf16."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unified_rl.config import TrainConfig
from unified_rl.methods import grpo
from unified_rl.hf.logprobs import completion_logprobs
from unified_rl.lm_head import linear_logprobs
from unified_rl.loop import Trainer
from unified_rl.precision import autocast
from unified_rl.rewards import FromCallable
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer

from helpers import random_rollout

TOK = char_tokenizer()


def fp32_model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=23, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("backward", [False, True])
def test_chunked_head_under_bf16_matches_plain_bf16_head(backward):
    torch.manual_seed(0)
    h = torch.randn(40, 32, requires_grad=True)
    w = torch.randn(23, 32, requires_grad=True)
    t = torch.randint(0, 23, (40,))
    g = torch.randn(40)
    model = torch.nn.Linear(1, 1)  # only its device matters to autocast()
    with autocast(model, "bf16", backward=backward):
        ours = linear_logprobs(h, w, None, t, chunk_bytes=4 * 23 * 7)  # several chunks
        ref = torch.log_softmax(torch.nn.functional.linear(h, w).float(), -1).gather(1, t[:, None]).squeeze(1)
    assert ours.dtype == torch.float32  # fp32 log-softmax accumulation
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    gh, gw = torch.autograd.grad((ours * g).sum(), (h, w))
    rh, rw = torch.autograd.grad((ref * g).sum(), (h, w))
    torch.testing.assert_close(gh, rh, rtol=2e-2, atol=2e-2)  # bf16 rounding of the backward matmuls
    torch.testing.assert_close(gw, rw, rtol=2e-2, atol=2e-2)
    fp32 = linear_logprobs(h, w, None, t)
    assert 0 < float((ours - fp32).detach().abs().max()) < 0.5  # bf16 really was used, and stays close


def test_bf16_logprobs_close_to_fp32():
    model, r = fp32_model(), random_rollout(3, n_groups=3, group_size=2, completion_max=8)
    fp32 = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    with autocast(model, "bf16"):
        bf16 = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    assert bf16.dtype == torch.float32 and bool(torch.isfinite(bf16).all())
    assert 0 < float((bf16 - fp32).detach().abs().max()) < 0.1


def test_grpo_trains_in_bf16():
    rows = ArithmeticTask().train_rows(32)
    from unified_rl.hf import tiny_llama

    model = tiny_llama(len(TOK), hidden=32, layers=2, heads=2, intermediate=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=2, questions_per_step=4, lr=1e-3, max_new_tokens=12, precision="bf16")
    reward = FromCallable(lambda prompts, completions, **_: [float("7" in c) for c in completions])
    history = Trainer(model, TOK, grpo(group_size=4), rows, cfg, reward=reward).run(progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    for m in history:
        assert all(v == v and abs(v) != float("inf") for v in m.values() if isinstance(v, float)), m
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_precision_is_checked():
    with pytest.raises(ValueError, match=r"config field 'precision' = 'fp16': choose one of fp32, bf16"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8'"):
        autocast(torch.nn.Linear(1, 1), "int8")
