"""Checkpoints verify themselves: a corrupted, foreign or mismatched checkpoint is one clear line,
never resumed silently; a sound previous checkpoint is used instead, and that is said (reliability, item 5)."""

import json
import logging
import os

import pytest

from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
from unified_rl.checkpoint import CheckpointError
from unified_rl.config import TrainConfig
from unified_rl.hf import tiny_llama
from unified_rl.loop import Trainer
from unified_rl.methods import online_rft, sft
from unified_rl.rewards import FromCallable

TOK, ROWS = char_tokenizer(), ArithmeticTask().train_rows(32)


def trainer(out, method=None, hidden=32):
    cfg = TrainConfig(steps=4, questions_per_step=2, checkpoint_every=1, out_dir=str(out), max_new_tokens=48)
    method = method or sft()
    reward = FromCallable(lambda prompts, completions, **_: [1.0] * len(completions)) if method.name != "sft" else None
    return Trainer(tiny_llama(len(TOK), hidden=hidden, layers=1, heads=2, intermediate=64), TOK, method, ROWS, cfg, reward=reward)


@pytest.fixture
def run(tmp_path):
    t = trainer(tmp_path)
    t.train_step(), t.train_step()  # checkpoint = step 2, checkpoint.prev = step 1
    return tmp_path


def flip(path, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def alter_state(path):
    doc = json.load(open(path))
    doc["state"]["__dict__"][4][1] = 7  # one number of the state changed (the iteration)
    json.dump(doc, open(path, "w"))


CORRUPTIONS = {
    "truncated tensors": (lambda d: truncate(d / "tensors.safetensors"), r"tensors.safetensors: missing, truncated or altered"),
    "bit-flipped tensors": (lambda d: flip(d / "tensors.safetensors", -5), r"tensors.safetensors: missing, truncated or altered"),
    "altered state": (lambda d: alter_state(d / "state.json"), r"state.json: its state does not match its checksum"),
    "garbage state": (lambda d: (d / "state.json").write_bytes(b"\x00\xff garbage"), r"state.json: not a checkpoint state file"),
    "a list, not a state": (lambda d: (d / "state.json").write_text("[1, 2]"), r"state.json: not a checkpoint state file \(a list"),
    "missing tensors": (lambda d: os.remove(d / "tensors.safetensors"), r"tensors.safetensors: missing"),
}


@pytest.mark.parametrize("fault", sorted(CORRUPTIONS))
def test_a_corrupted_checkpoint_falls_back_to_the_previous_one_and_says_so(run, fault, caplog):
    damage, message = CORRUPTIONS[fault]
    damage(run / "checkpoint")
    resumed = trainer(run)
    with caplog.at_level(logging.WARNING, logger="unified_rl"):
        resumed.resume(str(run / "checkpoint"))
    assert resumed.step_count == 1
    assert len(caplog.records) == 1 and "resuming from the previous checkpoint" in caplog.records[0].message
    import re
    assert re.search(message, caplog.records[0].message), caplog.records[0].message


@pytest.mark.parametrize("fault", sorted(CORRUPTIONS))
def test_with_both_checkpoints_corrupted_resume_refuses(run, fault):
    damage, message = CORRUPTIONS[fault]
    damage(run / "checkpoint")
    damage(run / "checkpoint.prev")
    resumed = trainer(run)
    before = {k: v.clone() for k, v in resumed.policy.state_dict().items()}
    with pytest.raises(CheckpointError, match=message + r".*the previous checkpoint is unusable too"):
        resumed.resume(str(run / "checkpoint"))
    assert all((before[k] == v).all() for k, v in resumed.policy.state_dict().items())  # nothing was loaded


def test_no_older_checkpoint_is_said(tmp_path):
    t = trainer(tmp_path)
    t.train_step()
    truncate(tmp_path / "checkpoint" / "tensors.safetensors")
    with pytest.raises(CheckpointError, match=r"\(and there is no older checkpoint to fall back to\)"):
        trainer(tmp_path).resume(str(tmp_path / "checkpoint"))


def test_a_checkpoint_of_another_model_or_method_is_refused(run):
    with pytest.raises(CheckpointError, match=r"parameter 'model.embed_tokens.weight' has shape \[20, 32\] in the checkpoint but \[20, 64\]"):
        trainer(run, hidden=64).resume(str(run / "checkpoint"))
    with pytest.raises(CheckpointError, match=r"a checkpoint of method 'sft', but this run trains 'online_rft'"):
        trainer(run, method=online_rft()).resume(str(run / "checkpoint"))


def test_the_cli_says_it_in_one_line(run, capsys):
    from unified_rl.apps.cli import main

    for d in ("checkpoint", "checkpoint.prev"):
        flip(run / d / "tensors.safetensors", -5)
    assert main(["train", "--method", "sft", "--out", str(run), "--resume", "--steps", "4", "--questions-per-step", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing, truncated or altered" in err and "unusable too" in err
