"""Every registered method trains through the real ``unified-rl train --method NAME`` entry point:
RL methods on the embedded task, preference methods on a chosen/rejected file."""

import json

import pytest

from unified_rl.apps.cli import main
from unified_rl.methods import REGISTRY

PREFERENCE = {"dpo", "ipo", "hinge", "simpo", "orpo"}
DISTILLATION = {"gkd", "distill", "opd"}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_runs_from_the_command_line(name, tmp_path):
    group = ["--group-size", "2"] if REGISTRY[name].parameter("group_size") else []  # SFT and PPO draw no groups
    args = ["train", "--method", name, "--steps", "2", "--questions-per-step", "2", *group, "--max-new-tokens", "48",
            "--out", str(tmp_path / "o"), "--no-progress"]
    if name in PREFERENCE:
        (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "chosen": f"#{i + 1}", "rejected": f"#{i}"})
                                                        for i in range(6)) + "\n")
        args += ["--data", str(tmp_path / "pairs.jsonl"), "--format", "preference"]
    if name in DISTILLATION:  # a teacher folder: the embedded model's shape, another seed
        from unified_rl.apps.tasks import char_tokenizer
        from unified_rl.hf import save_model, tiny_llama

        tok = char_tokenizer()
        save_model(tiny_llama(len(tok), seed=5), tok, str(tmp_path / "teacher"))
        args += ["--teacher", str(tmp_path / "teacher")]
    assert main(args) == 0
    lines = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "loss" in m]
    assert len(steps) == 2 and all(m["phase"] == name for m in steps)
    assert ("dpo/accuracy" in steps[0]) == (name in PREFERENCE | {"online_dpo"})  # online DPO samples and ranks its pairs
    assert ("distill/mean" in steps[0]) == (name in DISTILLATION - {"opd"})  # opd: the sampled reverse KL
    assert ("distill/teacher_kl" in steps[0]) == (name == "opd")
    assert ("kto/reference_point" in steps[0]) == (name == "kto")


@pytest.mark.parametrize("method,rows", [
    ("grpo", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]),                        # prompts: no --format needed
    ("dapo", [{"prompt": f"{i}+1=", "completion": f"#{i + 1}", "answer": str(i + 1)} for i in range(6)]),  # prompt_completion
    ("hinge", [{"prompt": f"{i}+1=", "chosen": f"#{i + 1}", "rejected": f"#{i}"} for i in range(6)]),    # preference
    ("kto", [{"prompt": f"{i}+1=", "chosen": f"#{i + 1}", "rejected": f"#{i}"} for i in range(6)]),      # preference, unpaired
    ("sft", [{"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(6)]),  # gsm8k
])
def test_the_format_is_read_from_the_rows(method, rows, tmp_path):
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    group = ["--group-size", "2"] if REGISTRY[method].parameter("group_size") else []
    args = ["train", "--method", method, "--data", str(tmp_path / "rows.jsonl"), "--steps", "1", "--questions-per-step", "2",
            *group, "--max-new-tokens", "24", "--out", str(tmp_path / "o"), "--no-progress"]
    if "question" in rows[0]:  # GSM8K's prompts are English: a model whose tokenizer reads text (the demo's reads arithmetic only)
        from unified_rl.apps.tasks import chat_tokenizer
        from unified_rl.hf import save_model, tiny_llama

        tok = chat_tokenizer()
        save_model(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64, max_positions=256), tok, str(tmp_path / "m"))
        args += ["--model", str(tmp_path / "m")]
    assert main(args) == 0


def test_a_prompts_file_cannot_train_sft(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    assert main(["train", "--method", "sft", "--data", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--format prompts has none" in capsys.readouterr().err


def test_a_tokenizer_without_a_pad_token_needs_pad_token(tmp_path, capsys):
    """A model folder whose tokenizer has no pad token: a one-line error that names --pad-token, and
    --pad-token with an existing token (its eos) trains; a text that is not a token is refused."""
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import save_model, tiny_llama

    tok = char_tokenizer()
    eos = tok.eos_token
    tok.pad_token = None
    save_model(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64), tok, str(tmp_path / "m"))
    base = ["train", "--method", "grpo", "--model", str(tmp_path / "m"), "--steps", "1", "--questions-per-step", "2", "--group-size", "2",
            "--max-new-tokens", "8", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 2
    assert f"--pad-token {eos!r}" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b"), "--pad-token", "not-a-token"]) == 2
    assert "is not a token of this tokenizer" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "c"), "--pad-token", eos]) == 0


def test_an_sft_run_s_plot_says_why_panels_are_empty(tmp_path):
    from unified_rl.apps.plots import empty_panels, plot_training

    assert main(["train", "--method", "sft", "--steps", "2", "--questions-per-step", "2", "--max-new-tokens", "48",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    history = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    notes = empty_panels(history)
    assert set(notes) == {"training reward", "KL"} and "sft trains on given completions" in notes["training reward"]
    assert empty_panels(history + [{"phase": "grpo", "step": 1, "loss": 0.1, "reward/mean": 0.5, "kl/k3": 0.0}]) == {}
    assert (tmp_path / "o" / "plot.png").stat().st_size > 10_000
    plot_training([], str(tmp_path / "empty.png"))  # nothing at all: four explained panels, no error
