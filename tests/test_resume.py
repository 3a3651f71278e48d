"""Checkpoint and resume: a run resumed in a new process continues bitwise identically, and a
kill during a save never loses the last good checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from unified_rl import checkpoint

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, WORKER, *map(str, args)], check=True, env=env, timeout=300)


def _metrics(path):
    rows = [json.loads(line) for line in open(path)]
    return [{k: v for k, v in m.items() if not k.startswith("time/") and k != "tokens_per_s"} for m in rows]


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_resume_across_a_process_restart_is_bitwise(tmp_path, method):
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(straight, method, 5, "fresh")
    _run(split, method, 4, "fresh")          # checkpoints at steps 2 and 4, then exits
    _run(split, method, 5, "resume")         # a new process: loads step 4, runs step 5
    a, b = load_file(straight / "final-5.safetensors"), load_file(split / "final-5.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = _metrics(straight / "metrics.jsonl"), _metrics(split / "metrics.jsonl")
    assert ma[4] == mb[-1]  # step 5's metrics are identical too


def test_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    folder = str(tmp_path / "checkpoint")
    checkpoint.save_state({"step": 1, "w": torch.ones(3)}, folder)
    # A save that dies while writing: the old checkpoint is untouched.
    with pytest.raises(TypeError):
        checkpoint.save_state({"step": 2, "bad": object()}, folder)
    assert checkpoint.load_state(folder)["step"] == 1
    # A save killed between its two renames: the previous one is found in the '.old' copy.
    real = os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_state({"step": 3, "w": torch.zeros(3)}, folder)
    monkeypatch.setattr(checkpoint.os, "replace", real)
    state = checkpoint.load_state(folder)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert checkpoint.latest(str(tmp_path)) is not None


def test_checkpoint_round_trips_optimizer_state_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    checkpoint.save_state({"opt": opt.state_dict()}, str(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path / "c")) == ["state.json", "tensors.safetensors"]
    loaded = checkpoint.load_state(str(tmp_path / "c"))["opt"]
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded)
    assert fresh.param_groups[0]["betas"] == (0.9, 0.95)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, fresh.state_dict()["state"][0][k])


@pytest.mark.parametrize("killed_after, checkpointed", [(3, 2), (2, 2), (4, 4)])
def test_metrics_survive_a_resume(tmp_path, killed_after, checkpointed):
    """Killed after step ``killed_after`` with the last checkpoint at ``checkpointed``: the resumed
    run's metrics.jsonl holds steps 1..4 once each, and its history (what metrics.csv is written
    from) keeps the steps up to the checkpoint."""
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
    from unified_rl.config import TrainConfig
    from unified_rl.hf import tiny_llama
    from unified_rl.loop import Trainer
    from unified_rl.methods import sft

    tok, rows = char_tokenizer(), ArithmeticTask().train_rows(32)
    cfg = TrainConfig(steps=4, questions_per_step=4, checkpoint_every=2, out_dir=str(tmp_path), max_new_tokens=48)
    first = Trainer(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64), tok, sft(), rows, cfg)
    for _ in range(killed_after):  # then "killed": later steps are logged but not checkpointed
        first.train_step()
    second = Trainer(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64), tok, sft(), rows, cfg)
    second.resume(checkpoint.latest(str(tmp_path)))
    assert [m["step"] for m in second.history] == list(range(1, checkpointed + 1))
    second.run(progress=False)
    logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert logged == [1, 2, 3, 4] and [m["step"] for m in second.history] == [1, 2, 3, 4]
