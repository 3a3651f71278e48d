"""An unscored sample is never a zero, and group statistics are exact (issue: reliability, items 1-2)."""

import pytest
import torch
from hypothesis import given, strategies as st

import unified_rl as url
import unified_rl.coefficients as C
from helpers import random_rollout, tiny_model, with_policy_logprobs
from unified_rl.apps.cli import main
from unified_rl.apps.tasks import char_tokenizer
from unified_rl.data.sources import PairSource
from unified_rl.rollout import Sample

MODEL = tiny_model()


class Values(torch.nn.Module):
    """A value model: V(s_t) read off an embedding of the token (varied, deterministic)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.v = torch.nn.Embedding(32, 1).double()

    def forward(self, input_ids, attention_mask):
        return self.v(input_ids).squeeze(-1)


def _with_unscored(r, unscored, placeholder):
    scored = torch.ones(r.batch_size, dtype=torch.bool)
    scored[unscored] = False
    rewards = r.rewards.clone()
    rewards[unscored] = placeholder
    return r.replace(rewards=rewards, scored=scored)


@given(seed=st.integers(0, 1000), placeholder=st.floats(-1e6, 1e6))
def test_an_unscored_samples_placeholder_changes_no_advantage(seed, placeholder):
    """Group-normalised, leave-one-out and GAE advantages ignore the reward slot of an unscored
    sample (whatever it holds), and give that sample exactly 0."""
    r = with_policy_logprobs(MODEL, random_rollout(seed, n_groups=2, group_size=4), seed)
    gae = C.gae(kl_beta=0.04, whiten=True)
    r = r.replace(values=Values()(r.input_ids, r.attention_mask))  # what the learner fills from the critic
    for estimator in (C.group_normalized(), C.leave_one_out(), gae):
        a = estimator(_with_unscored(r, [1, 6], 0.0))
        b = estimator(_with_unscored(r, [1, 6], placeholder))
        assert torch.equal(a.advantages, b.advantages)
        assert bool((a.advantages[[1, 6]] == 0).all())
        if a.returns is not None:
            assert torch.equal(a.returns, b.returns) and bool((a.returns[[1, 6]] == 0).all())


@pytest.mark.parametrize("scale", [1e20, -1e25, 3e37, 1e-30, 1e-40])
@pytest.mark.parametrize("estimator", ["group_normalized", "process_normalized"])
def test_group_statistics_are_exact_for_huge_and_tiny_rewards(scale, estimator):
    """[s, 0, 0, 0] normalises to [1.5, -0.5, -0.5, -0.5] whatever s (ddof 1: std = |s| / 2), in fp32
    rewards too (an fp32 variance of 1e20-sized rewards overflows; of 1e-40 ones, underflows)."""
    r = random_rollout(0, n_groups=1, group_size=4)
    rewards = torch.tensor([scale, 0.0, 0.0, 0.0], dtype=torch.float32)
    last = r.completion_mask & (r.completion_mask.long().cumsum(-1) == r.completion_lengths[:, None])
    if estimator == "group_normalized":
        a = C.group_normalized()(r.replace(rewards=rewards)).advantages
    else:  # one step reward per sample, at its last token: the same normalisation over steps
        a = C.process_normalized()(r.replace(step_rewards=torch.where(last, rewards[:, None], 0.0), step_mask=last)).advantages
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5]) * (1 if scale > 0 else -1)
    per_sample = torch.stack([a[i][r.completion_mask[i]][-1] for i in range(4)])
    assert a.dtype == torch.float32
    torch.testing.assert_close(per_sample, expected, rtol=1e-6, atol=0)


def test_pairs_never_use_an_unscored_sample():
    class Judge(url.RewardFunction):
        def __call__(self, rollout, texts):  # sample 0 of each group right, 1 unscored, 2-3 wrong
            g = torch.arange(rollout.batch_size) % 4
            return rollout.replace(rewards=(g == 0).float(), scored=g != 1)

    class Fixed(url.DataSource):
        def sample(self, policy, n):
            r = random_rollout(3, n_groups=n, group_size=4)
            return r.replace(texts=tuple(Sample("p", "c") for _ in range(r.batch_size)))

    source = PairSource.__new__(PairSource)
    source.sampled, source.judge, source.max_draws = Fixed(), Judge(), 1
    source.sampled.encoder = url.data.Encoder(char_tokenizer())
    pairs = source.sample(None, 3)
    assert pairs.batch_size == 6
    assert bool(pairs.scored.all()) and pairs.rewards.tolist() == [1.0, 0.0] * 3


def test_reward_mean_is_over_scored_samples_and_counts_the_rest():
    from unified_rl.config import TrainConfig
    from unified_rl.hf import tiny_llama
    from unified_rl.apps.tasks import ArithmeticTask
    from unified_rl.loop import Trainer

    tok = char_tokenizer()

    def half(prompts, completions, **_):
        return [None if i % 2 else 1.0 for i in range(len(completions))]

    cfg = TrainConfig(steps=1, questions_per_step=2, max_new_tokens=4)
    trainer = Trainer(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64), tok, url.methods.grpo(beta=0.0, group_size=4),
                      ArithmeticTask().train_rows(8), cfg, reward=url.rewards.FromCallable(half))
    m = trainer.train_step()
    assert m["reward/mean"] == 1.0 and m["reward/unscored"] == 4.0


def test_a_null_answer_is_an_error_not_a_zero():
    r = random_rollout(0, n_groups=1, group_size=2)
    texts = (Sample("1+1=", "#2", {"answer": None}), Sample("1+1=", "#2", {"answer": "2"}))
    with pytest.raises(ValueError, match=r"sample 0 .* has an empty or null 'answer'"):
        url.rewards.OutcomeReward(url.rewards.AfterMarker("#"))(r, texts)


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "1+1="}', r"rl.jsonl, line 2: missing column 'answer'"),
    ('{"prompt": "1+1=", "answer": null}', r"rl.jsonl, line 2: column 'answer' must be a string, got null"),
    ('{"prompt": "1+1=", "answer": "  "}', r"rl.jsonl, line 2: column 'answer' is empty"),
])
def test_rl_data_without_answers_fails_when_loaded(tmp_path, capsys, line, message):
    data = tmp_path / "rl.jsonl"
    data.write_text('{"prompt": "2+2=", "answer": "4"}\n' + line + "\n")
    assert main(["train", "--method", "grpo", "--data", str(data), "--format", "prompts", "--out", str(tmp_path / "o"),
                 "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    import re
    assert re.search(message, err), err


@given(seed=st.integers(0, 1000), unscored=st.lists(st.integers(0, 5), max_size=3, unique=True))
def test_leave_one_out_is_the_reward_minus_the_mean_of_the_other_scored_samples(seed, unscored):
    """A_i = r_i - mean over the *scored* j != i of its group (written out by hand, fp64); 0 for an
    unscored sample and for a sample without a scored partner."""
    r = random_rollout(seed, n_groups=2, group_size=3)
    g = torch.Generator().manual_seed(seed)
    r = r.replace(rewards=torch.randn(6, generator=g, dtype=torch.float64))
    scored = torch.ones(6, dtype=torch.bool)
    scored[unscored] = False
    got = C.leave_one_out()(r.replace(scored=scored)).advantages
    for i in range(6):
        others = [j for j in range(6) if j != i and r.group_ids[j] == r.group_ids[i] and scored[j]]
        want = float(r.rewards[i] - r.rewards[others].mean()) if scored[i] and others else 0.0
        row = got[i][r.completion_mask[i]]
        torch.testing.assert_close(row, torch.full_like(row, want), rtol=1e-12, atol=1e-12)


def test_online_dpo_leaves_out_a_pair_with_an_unscored_sample():
    """A pair whose sample could not be scored is not ranked (an unscored 0 would lose every tie)."""
    from unified_rl.data.ranked import rank_pairs

    r = random_rollout(2, n_groups=3, group_size=2)
    r = r.replace(rewards=torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0]), scored=torch.tensor([True, True, False, True, True, True]))
    pairs, dropped = rank_pairs(r)
    assert dropped == 1 and len(pairs) == 2
    assert [p.chosen.tolist() for p in pairs] == [[True, False], [False, True]]  # a tie goes to the first, as TRL
