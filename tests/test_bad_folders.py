"""A model folder, tokenizer or chat template that cannot work, and numbers that break, are one line
through the real command -- never a traceback."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from unified_rl.apps.cli import main
from unified_rl.apps.tiny_model import write_tiny_qwen2

CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]}
RUN = ["--method", "sft", "--steps", "1", "--questions-per-step", "2", "--max-new-tokens", "40", "--eval-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_tiny_qwen2(str(tmp_path_factory.mktemp("tiny") / "model"))


def _nan_weight(folder):
    w = load_file(f"{folder}/model.safetensors")
    w[sorted(w)[3]][0, 0] = float("inf")
    save_file(w, f"{folder}/model.safetensors", metadata={"format": "pt"})


def _no_pad(folder):  # transformers then adds a pad token the embeddings have no row for
    config = json.load(open(f"{folder}/tokenizer_config.json"))
    config.pop("pad_token")
    json.dump(config, open(f"{folder}/tokenizer_config.json", "w"))


def _adapter_only(folder):
    shutil.move(f"{folder}/config.json", f"{folder}/moved.json")
    json.dump({"base_model_name_or_path": "org/base", "peft_type": "LORA"}, open(f"{folder}/adapter_config.json", "w"))


def _raising_template(folder):
    with open(f"{folder}/chat_template.jinja", "w") as f:
        f.write("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}{{ m['content'] }}{% endfor %}")


def _broken_template(folder):
    with open(f"{folder}/chat_template.jinja", "w") as f:
        f.write("{% for m in messages %}{{ m['content'] }")


@pytest.mark.parametrize("damage,chat,said", [
    (_nan_weight, False, "holds 1 NaN or infinite value(s); its weights are damaged"),
    (_no_pad, False, "token(s) 102 '<|endoftext|>' have none (the pad token: pass --pad-token"),
    (_adapter_only, False, "holds a LoRA adapter (adapter_config.json), not a model: give its base model ('org/base'"),
    (_raising_template, True, "line 1: the tokenizer's chat template fails on this row (TemplateError: System role not supported)"),
    (_broken_template, True, "line 1: the tokenizer's chat template fails on this row (TemplateSyntaxError"),
], ids=["nan-weights", "no-pad-token", "adapter-folder", "template-raises", "template-does-not-parse"])
def test_a_folder_that_cannot_work_is_one_line(good, tmp_path, capsys, damage, chat, said):
    folder = tmp_path / "model"
    shutil.copytree(good, folder)
    damage(str(folder))
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    args = ["train", "--model", str(folder), *RUN, "--out", str(tmp_path / "o"), *(["--data", str(data)] if chat else [])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("unified-rl train: error:") and said in err[-1], err
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "o" / "metrics.jsonl").exists()


def test_a_prompt_of_empty_messages_is_refused(good, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "2"}]}) + "\n")
    assert main(["train", "--model", good, "--data", str(data), *RUN, "--out", str(tmp_path / "o")]) == 2
    assert "empty.jsonl, line 1: column 'prompt': every message is empty" in capsys.readouterr().err


def test_numbers_that_break_stop_in_one_line(tmp_path, capsys):
    """An lr that blows the weights up: the next step's gradient is NaN, and the run says so in one line (exit 1)."""
    assert main(["train", *RUN[:2], "--steps", "3", *RUN[4:], "--lr", "1e30", "--grad-clip", "1e38", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stopped: step" in err and "gradient norm is nan" in err
