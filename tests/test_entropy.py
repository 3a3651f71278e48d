"""The policy's per-token entropy: computed by the engine only when a piece reads it (the top-entropy
mask), equal to the entropy of the softmax written plainly, and logged as ``entropy/mean``."""

import torch

import unified_rl as url
import unified_rl.coefficients as C
from helpers import random_rollout, tiny_model
from helpers import ROWS, TOK, has_seven, small_model
from unified_rl.config import TrainConfig
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable


def test_engine_entropies_equal_the_softmax_entropy_at_the_sampling_temperature():
    model = tiny_model(2)
    r = random_rollout(2, n_groups=2, group_size=3, allow_empty=True).replace(temperature=0.7)
    with torch.no_grad():
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1] / 0.7
        p = torch.softmax(logits, -1)
        h = -(p * torch.log_softmax(logits, -1)).sum(-1)
    want = torch.where(r.completion_mask, torch.cat([torch.zeros_like(h[:, :1]), h], 1), 0.0).float()
    for max_tokens in (None, 5):
        got = url.engine.entropies(model, r, url.ExecutionPlan(max_tokens=max_tokens))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_a_top_entropy_gated_method_trains_and_logs_entropy():
    coef = C.chain(C.group_normalized(), C.gated(C.ppo_clip(0.2), C.top_entropy_mask(0.2)), aggregation=C.token_mean(), name="top20")
    assert "entropies" in coef.needs
    method = url.Method("top20", coef, url.data.Sampled(4))
    cfg = TrainConfig(steps=2, questions_per_step=4, lr=1e-3, max_new_tokens=6)
    history = Trainer(small_model(seed=1), TOK, method, ROWS, cfg, reward=FromCallable(has_seven)).run(progress=False)
    assert all(m["entropy/mean"] > 0 for m in history)
    assert all(0.7 <= m["gc/frac_masked"] <= 0.85 for m in history)  # 80% of tokens dropped, up to ties and rounding
