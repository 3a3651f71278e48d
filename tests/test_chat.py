"""Conversational data: TRL's formats rendered as TRL renders them, rewards that receive messages,
clear errors for rows a chat template cannot render, and a conversational GRPO run."""

import json

import pytest
import torch

from unified_rl import methods
from unified_rl.apps.tasks import char_tokenizer, chat_tokenizer
from unified_rl.config import TrainConfig
from unified_rl.data.chat import CHAT, normalize, render, render_rows
from unified_rl.data.rows import read_jsonl
from unified_rl.data.encoder import Encoder
from unified_rl.hf import tiny_llama
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable

trl_data = pytest.importorskip("trl.data_utils")
TOK = chat_tokenizer()
U = {"role": "user", "content": "What is 2+3?"}
SYS = {"role": "system", "content": "Answer briefly."}
A5, A6 = {"role": "assistant", "content": "It is 5."}, {"role": "assistant", "content": "It is 6."}
EXAMPLES = {
    "prompt-only": {"prompt": [SYS, U]},
    "prompt-completion": {"prompt": [U], "completion": [A5]},
    "preference, explicit prompt": {"prompt": [SYS, U], "chosen": [A5], "rejected": [A6]},
    "preference, implicit prompt": {"chosen": [U, A5], "rejected": [U, A6]},
    "prompt ending in an assistant turn": {"prompt": [U, {"role": "assistant", "content": "Let me think:"}], "completion": [A5]},
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_rendering_equals_trl(name):
    example = EXAMPLES[name]
    want = trl_data.apply_chat_template(trl_data.maybe_extract_prompt(example), TOK)
    got = render(example, TOK)
    assert got["prompt"] == want["prompt"]
    for col in ("completion", "chosen", "rejected"):
        if col in want:  # TRL keeps the end-of-turn token; the encoder appends it as eos here
            assert got[col] + TOK.eos_token + "\n" == want[col], col
    assert got[CHAT] == trl_data.maybe_extract_prompt(example)["prompt"]


def test_standard_implicit_prompt_equals_trl():
    example = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    assert normalize(example) == trl_data.extract_prompt(example)


def test_messages_rows_split_into_prompt_and_last_turn_and_standard_rows_stay():
    row = normalize({"messages": [SYS, U, A5], "answer": "5"})
    assert row["prompt"] == [SYS, U] and row["completion"] == [A5] and row["answer"] == "5"
    plain = {"prompt": "2+3=", "completion": "5"}
    assert render(plain, TOK) is plain


def test_chat_prompts_are_tokenised_without_added_special_tokens():
    rendered = render({"prompt": [U], "answer": "5"}, TOK)
    ids = Encoder(TOK).prompt(rendered)
    assert ids == TOK(rendered["prompt"], add_special_tokens=False).input_ids
    assert TOK.convert_ids_to_tokens(ids[:1]) == ["<|im_start|>"]


def test_rows_a_template_cannot_render_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="row 1: the row is conversational .* no chat template"):
        render_rows([{"prompt": "plain"}, {"prompt": [U]}], char_tokenizer())
    with pytest.raises(ValueError, match=r"row 0: column 'prompt', message 1: expected \{'role': str, 'content': str\}"):
        render({"prompt": [U, {"role": "user"}]}, TOK)
    with pytest.raises(ValueError, match="must end in an assistant turn"):
        normalize({"messages": [U]})
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": [U], "completion": [A5]}) + "\n" + json.dumps({"prompt": [U], "completion": [{"content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: column 'completion', message 0"):
        read_jsonl(str(path), ("prompt", "completion"))


def test_reward_functions_receive_messages_as_trl_does():
    seen = {}

    def reward(prompts, completions, answer, **_):
        seen.update(prompts=prompts, completions=completions, answer=answer)
        return [float(c[0]["content"].strip().startswith(a)) for c, a in zip(completions, answer)]

    rows = [{"prompt": [U], "answer": "5"}] * 4
    cfg = TrainConfig(steps=1, questions_per_step=2, max_new_tokens=8, lr=1e-3)
    model = tiny_llama(len(TOK), hidden=32, layers=2, heads=2, intermediate=64)
    trainer = Trainer(model, TOK, methods.grpo(group_size=2), rows, cfg, reward=FromCallable(reward))
    m = trainer.train_step()
    assert seen["prompts"] == [[U]] * 4 and seen["answer"] == ["5"] * 4
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in seen["completions"])
    assert torch.isfinite(torch.tensor(m["loss"]))


def test_conversational_sft_trains_on_the_rendered_answer_ending_in_one_eos():
    from unified_rl.data.sources import SupervisedSource

    rows = render_rows([{"messages": [U, A5]}, {"prompt": [U], "completion": [A6]}], TOK)
    source = SupervisedSource(rows, Encoder(TOK, max_completion_tokens=64))
    r = source.sample(None, 2)
    for i, answer in enumerate(("It is 5.", "It is 6.")):
        ids = r.input_ids[i][r.completion_mask[i]].tolist()
        assert TOK.decode(ids) == answer + TOK.eos_token  # the template's end of turn is the one eos
        prompt = r.input_ids[i][r.attention_mask[i] & ~r.completion_mask[i]].tolist()
        assert TOK.decode(prompt) == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
