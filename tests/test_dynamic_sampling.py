"""DAPO's dynamic sampling: only groups whose rewards are not all equal reach the update, the
batch is refilled from further draws, and the counts of generated and kept groups are reported."""

import pytest
import torch

from unified_rl import methods
from unified_rl.config import TrainConfig
from unified_rl.data import DynamicSampling, Encoder, SampledSource
from unified_rl.hf import make_sampler
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable
from helpers import ROWS, TOK, has_seven, small_model


def _source(max_batches):
    inner = SampledSource(ROWS, Encoder(TOK), make_sampler("static", TOK), samples_per_question=4, max_new_tokens=6, seed=3)
    return DynamicSampling(inner, FromCallable(has_seven), TOK.pad_token_id, max_batches=max_batches)


def _spread(rollout):
    return {int(g): bool(rollout.rewards[rollout.group_ids == g].unique().numel() > 1) for g in rollout.group_ids.unique()}


@pytest.mark.parametrize("max_batches", [1, 6])
def test_only_groups_with_a_reward_spread_are_kept(max_batches):
    model = small_model(seed=1)
    source = _source(max_batches)
    batch = source.sample(model, 8)
    m = source.metrics()
    assert m["dynamic/batches"] <= max_batches and m["dynamic/generated_groups"] == 8 * m["dynamic/batches"]
    assert m["dynamic/kept_groups"] == len(_spread(batch)) <= 8
    assert all(_spread(batch).values())  # every kept group can teach
    assert torch.equal(batch.group_ids.unique(), torch.arange(int(m["dynamic/kept_groups"])))
    if max_batches == 6:  # drawing more refills the batch
        assert m["dynamic/kept_groups"] == 8 or m["dynamic/batches"] == 6


def test_dapo_with_dynamic_sampling_trains_and_logs_the_counts():
    cfg = TrainConfig(steps=3, questions_per_step=4, lr=1e-3, max_new_tokens=6)
    method = methods.dapo(group_size=4, dynamic_sampling=3, mask_truncated=True)
    trainer = Trainer(small_model(seed=1), TOK, method, ROWS, cfg, reward=FromCallable(has_seven))
    history = trainer.run(progress=False)
    for m in history:
        assert 0 < m["dynamic/kept_groups"] <= 4 and m["dynamic/generated_groups"] >= m["dynamic/kept_groups"]
        assert m["reward/groups_with_signal"] == 1.0  # the update saw only groups that can teach
