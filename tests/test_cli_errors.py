"""The real ``unified-rl`` entry point answers a user's mistake with exit code 2 and one line
naming what is wrong -- never a traceback (reliability, item 4)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

GOOD = {"prompt": "1+1=", "completion": "1+1=2;#2", "answer": "2"}


def run(args, cwd):
    exe = shutil.which("unified-rl")
    cmd = [exe] if exe else [sys.executable, "-m", "unified_rl.apps.cli"]
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture
def files(tmp_path):
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(GOOD) for _ in range(4)) + "\n")
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"prompt": "1+1=", "chosen": "#2", "rejected": "#3"}) for _ in range(4)) + "\n")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "broken.toml").write_text("lr = [1,\n")
    (tmp_path / "oldrun").mkdir()
    (tmp_path / "oldrun" / "metrics.jsonl").write_text('{"phase": "sft", "step": 1}\n')
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["train", "--method", "sft", "--out", "afile"], "--out 'afile' is a file, not a folder"),
    (["train", "--method", "sft", "--data", "pairs.jsonl", "--format", "preference"], "--format preference does not fit --method sft"),
    (["train", "--method", "sft", "--data", "rows.jsonl", "--format", "prompts"], "--format prompts has none"),
    (["train", "--method", "grpo", "--eval-data", "rows.jsonl"], "--eval-data has no effect without --data"),
    (["train", "--method", "grpo", "--trust-remote-code"], "--trust-remote-code has no effect without --model"),
    (["train", "--method", "grpo", "--config", "broken.toml"], "config file 'broken.toml' cannot be read"),
    (["train", "--method", "grpo", "--lr", "-1e-3"], "config field 'lr' = -0.001: must be a finite number > 0"),
    (["train", "--method", "grpo", "--reset-reference", "ture"], "argument --reset-reference: expected true or false, got 'ture'"),
    (["train", "--method", "online-rft"], "unknown method (did you mean 'online_rft'?)"),
    (["eval", "--k", "1,0"], "--k: each K must be an integer >= 1, got '0'"),
    (["eval", "--n", "0"], "--n: must be >= 1, got 0"),
    (["experiment", "maj-vs-pass", "--out", "afile"], "--out 'afile' is a file, not a folder"),
    (["train", "--method", "sft", "--out", "oldrun"], "--out 'oldrun' holds a run already; pass --resume to continue it"),
    (["train", "--method", "sft", "--out", "oldrun", "--resume"], "--resume: no checkpoint in 'oldrun'"),
    (["train", "--method", "sft", "--report-to", "wandb,tensorboard,wandb"], "'report_to' = 'wandb,tensorboard,wandb': wandb named twice"),
    (["train", "--method", "sft", "--report-to", "none,tensorboard"], "'none,tensorboard': 'none' beside tensorboard"),
])
def test_a_mistake_is_one_line_and_exit_code_2(files, args, message, monkeypatch, capsys):
    """``main`` (what the ``unified-rl`` script calls), in this process: a subprocess per case costs
    the torch import each time; the test below runs the real script once."""
    from unified_rl.apps.cli import main

    monkeypatch.chdir(files)
    try:
        status = main(args + (["--out", "o"] if args[0] == "train" and "--out" not in args else []))
    except SystemExit as e:  # argparse's own errors exit with 2
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1], err
    assert not (files / "o").exists()  # nothing was started


def test_the_real_script_exits_with_2_and_one_line(files):
    out = run(["train", "--method", "grpo", "--lr", "-1e-3", "--out", "o"], files)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["unified-rl train: error: config field 'lr' = -0.001: must be a finite number > 0"]


def test_dpo_trains_on_a_chosen_rejected_file(files):
    out = run(["train", "--method", "dpo", "--data", "pairs.jsonl", "--format", "preference", "--steps", "1", "--questions-per-step", "2",
               "--out", "o", "--no-progress"], files)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in (files / "o" / "metrics.jsonl").read_text().splitlines()]
    assert "dpo/accuracy" in lines[0] and "reward/mean" not in lines[0]


def test_help_and_usage_errors_load_no_torch():
    """``unified-rl --help``, argparse's own errors and a config field's mistake import neither torch
    nor transformers (they answer at once); the heavy floors load only when a command runs."""
    code = ("import sys\nfrom unified_rl.apps.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['train'], ['nonsense'], ['train', '--method', 'grpo', '--lr', '-1'],\n"
            "             ['train', '--method', 'grpoo'], ['train', '--method', 'grpo', '--steps', '0', '--schedule', 'cosin']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--method" in out.stdout and "error: --method is required" in out.stderr
    assert "'lr' = -1.0" in out.stderr and "did you mean 'grpo'" in out.stderr and "'steps' = 0" in out.stderr


def test_a_run_is_quiet_and_current(tmp_path):
    """The real command under -W error for FutureWarning and transformers' DeprecationWarning (so the
    next transformers 5.x cannot break it silently), without transformers' "Writing model shards" bar."""
    out = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning:transformers", "-m",
                          "unified_rl.apps.cli", "train", "--method", "grpo", "--steps", "2", "--questions-per-step", "2", "--group-size", "2",
                          "--max-new-tokens", "8", "--eval-size", "4", "--out", str(tmp_path / "o"), "--no-progress"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Writing model shards" not in out.stderr and "Warning" not in out.stderr, out.stderr[-2000:]
    assert (tmp_path / "o" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("prompts, message", [
    (["What is one plus one?", "Name a prime."], "line 1: column 'prompt' 'What is one plus one?' encodes to 21 unknown tokens of 21"),
    (["1+1=", "hello"], "line 2: column 'prompt' 'hello' encodes to 5 unknown tokens of 5 with this tokenizer"),
    (["1+1=", "1+xyz"], "line 2: column 'prompt' '1+xyz' encodes to 3 unknown tokens of 5 with this tokenizer"),
])
def test_prompts_the_tokenizer_cannot_read_are_refused(tmp_path, prompts, message):
    """The demo model's arithmetic vocabulary cannot read English: one line naming file, line and why."""
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"prompt": p, "answer": "2"}) for p in prompts) + "\n")
    proc = run(["train", "--method", "grpo", "--data", "rows.jsonl", "--steps", "1", "--out", "out"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert message in line and "rows.jsonl" in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_prompt_that_encodes_to_nothing_is_refused():
    """A tokenizer whose pre-tokenizer drops every character of a prompt (here: it splits on
    whitespace and keeps no piece) is refused, not trained on an empty prompt."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from unified_rl.data import Encoder

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2, "yes": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[^a-z]+"), behavior="removed")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    Encoder(fast).check([{"prompt": "yes yes"}])
    with pytest.raises(ValueError, match=r"^row 1: column 'prompt' '1 \+ 1' encodes to no tokens with this tokenizer"):
        Encoder(fast).check([{"prompt": "yes"}, {"prompt": "1 + 1"}])
