"""Options users expect: gradient checkpointing (same gradient, full and LoRA), report_to backends
(TensorBoard and Trackio read back from what they wrote) and tables of sample completions."""

import json
import sqlite3

import pytest
import torch

from helpers import shared_prompt_rollout, tiny_model
from helpers import ROWS, TOK, has_seven, small_model
from unified_rl import engine, methods
from unified_rl.config import TrainConfig
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable


def _grads(model, rollout, coef):
    model.train()
    model.zero_grad()
    engine.backward(model, rollout, coef, engine.ExecutionPlan(max_tokens=24))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradient(lora):
    from unified_rl.hf import add_lora, enable_activation_checkpointing

    def build():
        m = tiny_model(3)
        return add_lora(m, r=4) if lora else m

    rollout = shared_prompt_rollout(4, n_groups=2, group_size=3)  # prompts run once per group, checkpointed or not
    coef = methods.grpo(beta=0.0).coefficient
    plain = build()
    prepared = coef.prepare(rollout.replace(old_logprobs=engine.logprobs(plain, rollout)))
    want = _grads(plain, prepared, coef)
    checkpointed = build()
    enable_activation_checkpointing(checkpointed)
    got = _grads(checkpointed, prepared, coef)
    assert want.keys() == got.keys() and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14)


def test_trainer_turns_gradient_checkpointing_on():
    cfg = TrainConfig(steps=1, questions_per_step=2, max_new_tokens=6, gradient_checkpointing=True)
    trainer = Trainer(small_model(), TOK, methods.grpo(group_size=2), ROWS, cfg, reward=FromCallable(has_seven))
    from unified_rl.hf import activation_checkpointing

    assert activation_checkpointing(trainer.policy)
    assert torch.isfinite(torch.tensor(trainer.train_step()["loss"]))


def test_gradient_checkpointing_runs_without_transformers_cache_warning(tmp_path):
    """The training passes ask for no KV cache, so transformers has nothing to warn about."""
    from helpers import run_cli

    done = run_cli(["train", "--method", "grpo", "--steps", "1", "--questions-per-step", "2", "--group-size", "2", "--max-new-tokens", "8",
                    "--eval-size", "2", "--gradient-checkpointing", "true", "--no-progress", "--out", "o"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "use_cache" not in done.stderr and "use_cache" not in done.stdout


def _run(tmp_path, report_to):
    cfg = TrainConfig(steps=2, questions_per_step=2, max_new_tokens=6, report_to=report_to,
                      log_completions_every=1, out_dir=str(tmp_path), checkpoint_every=0)
    trainer = Trainer(small_model(), TOK, methods.grpo(group_size=2), ROWS, cfg, reward=FromCallable(has_seven))
    return trainer.run(progress=False)


def test_tensorboard_gets_every_step_and_a_completions_table(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = _run(tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    rewards = events.Scalars("reward/mean")
    assert [e.step for e in rewards] == [1, 2]
    assert [round(e.value, 6) for e in rewards] == [round(m["reward/mean"], 6) for m in history]
    assert "completions/text_summary" in events.Tags()["tensors"]
    lines = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1] * 4 + [2] * 4 and all(x["reward"] in (0.0, 1.0) for x in lines)


TRACKIO_RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from test_training_options import _run
import pathlib
print(json.dumps([m["reward/mean"] for m in _run(pathlib.Path({out!r}), "trackio")]))
"""


def test_trackio_gets_every_step(tmp_path):
    pytest.importorskip("trackio")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}  # read when trackio is imported: a fresh process
    code = TRACKIO_RUN.format(tests=os.path.dirname(__file__), out=str(tmp_path / "run"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True).stdout
    want = json.loads(out.strip().splitlines()[-1])
    db = next((tmp_path / "trackio").glob("*.db"))
    with sqlite3.connect(db) as con:
        rows = con.execute("select step, metrics from metrics").fetchall()
    logged = {step: json.loads(m) for step, m in rows if "reward/mean" in json.loads(m)}
    assert sorted(logged) == [1, 2]
    assert [round(logged[s]["reward/mean"], 6) for s in (1, 2)] == [round(r, 6) for r in want]


def test_report_to_errors_are_clear():
    with pytest.raises(ValueError, match="report_to.*unknown backend 'mlflow'"):
        TrainConfig(report_to="mlflow")
    with pytest.raises(ValueError, match="tensorboard writes under out_dir"):
        cfg = TrainConfig(steps=1, questions_per_step=2, max_new_tokens=4, report_to="tensorboard")
        Trainer(small_model(), TOK, methods.grpo(group_size=2), ROWS, cfg, reward=FromCallable(has_seven)).train_step()
