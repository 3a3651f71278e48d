"""recipes/gsm8k_grpo.yaml runs as documented, on a tiny Qwen2-shaped chat model built here and the
GSM8K-style chat fixture: LoRA GRPO with math-verify rewards, TensorBoard, a merged export."""

import json
import os

import pytest

pytest.importorskip("peft")
pytest.importorskip("math_verify")

from transformers import AutoModelForCausalLM  # noqa: E402

from unified_rl.apps.cli import main  # noqa: E402
from unified_rl.apps.tiny_model import write_tiny_qwen2  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(__file__))
RECIPE = os.path.join(ROOT, "recipes", "gsm8k_grpo.yaml")
DATA = os.path.join(ROOT, "tests", "fixtures", "gsm8k_chat.jsonl")


def test_gsm8k_recipe_trains_a_lora_adapter_on_a_tiny_qwen2(tmp_path, capsys):
    model = write_tiny_qwen2(str(tmp_path / "tiny-qwen2"))
    out = tmp_path / "run"
    small = ["--steps", "2", "--questions-per-step", "2", "--group-size", "4", "--max-new-tokens", "12", "--precision", "fp32",
             "--max-tokens", "4096", "--log-completions-every", "1"]
    argv = ["train", "--config", RECIPE, "--model", model, "--data", DATA, "--out", str(out), "--lora-r", "4", "--lr", "1e-4",
            "--merge", "--no-progress", *small]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["phase"] == "grpo" for m in metrics)
    assert all("reward/unverifiable" in m and "reward/timeouts" in m for m in metrics)
    completions = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert completions and completions[0]["prompt"].startswith("<|im_start|>system\n")
    assert (out / "adapter" / "adapter_model.safetensors").exists() and any((out / "tensorboard").iterdir())
    merged = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    assert merged.config.model_type == "qwen2"


def test_recipe_keys_are_checked(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grpo\nmodle: x\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "unknown field(s) ['modle']" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [grpo\n")
    assert main(["train", "--config", str(broken), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize("name,text,said", [
    ("bool.yaml", "method: grpo\nsteps: true\n", "'steps' = True: must be an integer, not bool"),
    ("boolfloat.yaml", "method: grpo\nlr: true\n", "'lr' = True: must be a number, not bool"),
    ("text.yaml", "method: grpo\nsteps: '3'\n", "'steps' = '3': must be an integer, not str"),
    ("twice.yaml", "method: grpo\nsteps: 3\nsteps: 4\n", "line 3: key 'steps' given twice"),
    ("twice.json", '{"method": "grpo", "lr": 0.1, "lr": 0.2}', "key 'lr' given twice"),
    ("list.yaml", "method: grpo\nmodel: [a, b]\n", "model = ['a', 'b'] must be text (a path or a name), not list"),
    ("merge.yaml", "method: grpo\nmerge: 'yes'\n", "merge = 'yes' must be true/false, not str"),
    ("bomb.yaml", "method: grpo\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nreward: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "line 3: an alias"),
])
def test_a_recipe_is_read_strictly(tmp_path, capsys, name, text, said):
    """Types, duplicate keys, paths that are not text and alias bombs: one line naming the file, nothing started."""
    path = tmp_path / name
    path.write_text(text)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and said in err and not (tmp_path / "o").exists(), err
