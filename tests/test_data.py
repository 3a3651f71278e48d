"""The embedded task, tokenizer, loaders and rewards -- and the bad-input table."""

import json
import os

import pytest
import torch

import unified_rl as url
from unified_rl.data import Encoder, PreferenceSource, SampledSource, SupervisedSource, check_rows, gsm8k_rows, read_jsonl
from unified_rl.rewards import FromCallable, OutcomeReward, ProcessReward, WeightedSum
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer, extract_answer, parse_problem, step_checks
from unified_rl.hf import StaticCacheSampler, tiny_llama

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
TOK = char_tokenizer()


def test_tokenizer_round_trips_and_saves(tmp_path):
    text = "12*3=36;#36"
    ids = TOK(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text) and TOK.decode(ids) == text
    TOK.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again(text, add_special_tokens=False).input_ids == ids and again.pad_token_id == 0 and again.eos_token_id == 1


def test_task_solutions_check_out_and_splits_are_disjoint():
    task = ArithmeticTask()
    rows = task.train_rows(300)
    held = {r["prompt"] for r in task.eval_rows(256)}
    assert not held & {r["prompt"] for r in rows}
    for r in rows:
        p = parse_problem(r["prompt"])
        assert r["completion"].endswith(f"#{r['answer']}") and 2 <= len(p.ops) <= 4
        assert all(0 <= v <= 99 for v in p.values())
        assert all(ok for _, ok in step_checks(r["prompt"], r["completion"]))


def test_step_checks_by_hand():
    # "7*4-1=": steps "7*4=28" (ends at 6, ';'), "28-1=27" (ends at 14), answer "#27" (ends at 17)
    assert step_checks("7*4-1=", "7*4=28;28-1=27;#27") == [(6, True), (14, True), (17, True)]
    assert step_checks("7*4-1=", "7*4=29;29-1=28;#28") == [(6, False), (14, False), (17, False)]
    assert step_checks("7*4-1=", "") == [(0, False)]


def test_gsm8k_loader_on_fixture():
    rows = gsm8k_rows(os.path.join(FIX, "gsm8k_small.jsonl"))
    assert [r["answer"] for r in rows] == ["7", "60", "2000"]
    assert rows[0]["prompt"].startswith("Question: Ana has 3 apples") and rows[0]["prompt"].endswith("Answer:")
    reward = OutcomeReward(extract_answer)
    r = url.Rollout(torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool), torch.tensor([[False, True]] * 3))
    texts = [url.rollout.Sample(x["prompt"], x["completion"], x) for x in rows]
    assert reward(r, texts).rewards.tolist() == [1.0, 1.0, 1.0]


def _write(tmp_path, name, lines, raw=None):
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else "\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines).encode())
    return str(path)


@pytest.mark.parametrize(
    "lines, raw, message",
    [
        ([{"prompt": "1+1="}], None, r"line 1: missing column 'completion'"),
        ([{"prompt": "1+1=", "completion": "#2"}, {"prompt": 5, "completion": "#2"}], None, r"line 2: column 'prompt' must be a string, got int"),
        ([{"prompt": "  ", "completion": "#2"}], None, r"line 1: column 'prompt' is empty"),
        ([], None, r"zero rows"),
        (None, b'{"prompt": "1+1=", "completion": "#2"}\n{"prompt": "\xff", "completion": "x"}\n', r"line 2: invalid UTF-8"),
        (["not json"], None, r"line 1: not valid JSON"),
        ([[1, 2]], None, r"line 1: expected a JSON object, got list"),
        ([{"prompt": "1+1=" * 100, "completion": "#2"}], None, r"line 1: column 'prompt' has 400 characters, over the limit of 50"),
    ],
)
def test_bad_dataset_files(tmp_path, lines, raw, message):
    path = _write(tmp_path, "bad.jsonl", lines or [], raw)
    with pytest.raises(ValueError, match=message):
        read_jsonl(path, ("prompt", "completion"), max_prompt_chars=50)


def test_gsm8k_without_final_answer(tmp_path):
    path = _write(tmp_path, "g.jsonl", [{"question": "q?", "answer": "no marker"}])
    with pytest.raises(ValueError, match=r"row 1: column 'answer' does not end in '#### N'"):
        gsm8k_rows(path)


def test_in_memory_rows_and_prompt_token_limit():
    with pytest.raises(ValueError, match=r"rows, row 1: missing column 'answer'"):
        check_rows([{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2="}], ("prompt", "answer"))
    enc = Encoder(TOK, max_prompt_tokens=4)
    with pytest.raises(ValueError, match=r"column 'prompt' has 6 tokens, over max_prompt_tokens=4"):
        SupervisedSource([{"prompt": "1+1+1=", "completion": "x"}], enc).sample(None, 1)


def test_tokenizer_without_pad_token_is_rejected():
    from unified_rl.hf import check_tokenizer

    tok = char_tokenizer()
    tok.pad_token = None
    with pytest.raises(ValueError, match="has no pad token"):
        check_tokenizer(tok)


def test_sources_build_aligned_rollouts():
    model = tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64)
    rows = read_jsonl(os.path.join(FIX, "prompt_completion.jsonl"), ("prompt", "completion"))
    with pytest.raises(ValueError, match=r"column 'completion' of '4\*2=8;8-1=7;#7' has 15 tokens with eos, over max_completion_tokens=12"):
        SupervisedSource(rows, Encoder(TOK, max_completion_tokens=12), seed=1).sample(model, 2)
    enc = Encoder(TOK, max_completion_tokens=16)
    sup = SupervisedSource(rows, enc, seed=1).sample(model, 2)
    for i in range(2):
        text = TOK.decode(sup.input_ids[i][sup.completion_mask[i]].tolist(), skip_special_tokens=True)
        assert text == sup.texts[i].completion
    sampled = SampledSource(rows, enc, StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id), samples_per_question=3, max_new_tokens=6).sample(model, 2)
    assert sampled.group_ids.tolist() == [0, 0, 0, 1, 1, 1] and sampled.old_logprobs is not None
    assert sampled.texts[0].prompt == sampled.texts[2].prompt
    pairs = PreferenceSource(read_jsonl(os.path.join(FIX, "preference.jsonl"), ("prompt", "chosen", "rejected")), enc).sample(model, 2)
    assert pairs.chosen.tolist() == [True, False, True, False] and pairs.group_ids.tolist() == [0, 0, 1, 1]


def test_process_reward_marks_each_step_end():
    rows = [{"prompt": "7*4-1=", "completion": "7*4=28;28-1=26;#26", "answer": "27"}]
    enc = Encoder(TOK)
    r = SupervisedSource(rows, enc).sample(None, 1)
    out = ProcessReward(TOK, step_checks)(r, r.texts)
    start = int(r.completion_mask[0].nonzero()[0])
    marked = (out.step_mask[0].nonzero().squeeze(1) - start).tolist()
    assert marked == [6, 14, 17]
    assert out.step_rewards[0][out.step_mask[0]].tolist() == [1.0, 0.0, 0.0] and out.rewards.tolist() == [0.0]


@pytest.mark.parametrize("completion", ["7+5=12", "7+5=12;", "7+5=12;12-3=9", "7+5=12;12-3=9;#9", "#18", "7+5=12;#18"])
def test_stopping_early_is_never_rewarded(completion):
    # an unfinished chain (a missing step or a missing answer) must not score as an outcome success
    # nor end on a rewarded step, however right the steps it did write
    assert step_checks("7+5-3*2=", completion)[-1][1] is False
    rows = [{"prompt": "7+5-3*2=", "completion": completion, "answer": "18"}]
    r = SupervisedSource(rows, Encoder(TOK)).sample(None, 1)
    out = ProcessReward(TOK, step_checks)(r, r.texts)
    assert out.rewards.tolist() == [0.0]
    last = int(out.step_mask[0].nonzero().max())
    assert out.step_rewards[0, last].item() == 0.0
    finished = step_checks("7+5-3*2=", "7+5=12;12-3=9;9*2=18;#18")
    assert [ok for _, ok in finished] == [True, True, True, True]


def test_callable_reward_adapter():
    rows = [{"prompt": "1+1=", "completion": "#2", "answer": "2"}, {"prompt": "2+2=", "completion": "#5", "answer": "4"}]
    r = SupervisedSource(rows, Encoder(TOK), seed=0).sample(None, 2)

    def exact(prompts, completions, answer, **_):
        return [None if c == "#5" else float(c == "#" + a) for c, a in zip(completions, answer)]

    out = FromCallable(exact)(r, r.texts)
    assert out.scored.tolist() == [t.completion != "#5" for t in r.texts]
    both = WeightedSum([(0.5, FromCallable(exact)), (1.0, OutcomeReward(extract_answer))])(r, r.texts)
    assert both.scored.tolist() == out.scored.tolist()

    def broken(prompts, completions, **_):
        if any(c == "#5" for c in completions):
            raise KeyError("boom")
        return [1.0] * len(completions)

    bad_row = [t.completion for t in r.texts].index("#5")
    with pytest.raises(RuntimeError, match=rf"reward function 'broken' raised on sample {bad_row} \(prompt"):
        FromCallable(broken)(r, r.texts)
    with pytest.raises(ValueError, match=r"reward function 'nan_fn' returned nan for sample 0"):
        FromCallable(lambda p, c, **_: [float("nan")] * len(c), name="nan_fn")(r, r.texts)
    with pytest.raises(ValueError, match=r"returned 1 values for 2 samples"):
        FromCallable(lambda p, c, **_: [1.0], name="short")(r, r.texts)
    with pytest.raises(ValueError, match=r"returned 'x' \(str\) for sample 1"):
        FromCallable(lambda p, c, **_: [1.0, "x"], name="typo")(r, r.texts)


def test_replay_source_mixes_a_fraction_of_history():
    from unified_rl.data.sources import ReplaySource

    rows = [{"prompt": f"{i}+1=", "completion": f"#{i + 1}", "answer": str(i + 1)} for i in range(1, 9)]
    replay = ReplaySource(SupervisedSource(rows, Encoder(TOK), seed=0), fraction=0.25, seed=0)
    first = replay.sample(None, 4)
    assert first.batch_size == 4  # no history yet: all fresh
    second = replay.sample(None, 4)
    assert second.batch_size == 4
    replayed = second.texts[3]
    assert replayed.prompt in {t.prompt for t in first.texts}  # the last row comes from history
    assert second.texts[:3] != first.texts[:3]  # the first three are fresh draws
    assert len(set(second.group_ids.tolist())) == 4  # the replayed row is its own group
    with pytest.raises(ValueError, match="fraction must be in"):
        ReplaySource(replay, fraction=1.0)
