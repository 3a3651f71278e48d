"""Asynchronous rollouts through the Trainer: K = 0 is bitwise the synchronous run (10 steps), K = 1
and 2 lag at most K versions and record them, the resumed K = 0 run is bitwise the straight one, a
worker that is killed or hangs stops the run with one line and a checkpoint that resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import unified_rl as url
from unified_rl.asynchronous import RolloutWorkerError
from unified_rl.config import TrainConfig
from unified_rl.loop import Trainer
from unified_rl.rewards import FromCallable
from helpers import ROWS, TOK, has_seven, small_model


@pytest.fixture(autouse=True)
def one_thread():
    """The learner on one thread and the worker on one: the two processes compute alike."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


def _trainer(k, steps=10, **kw):
    method = url.methods.grpo(group_size=4)
    cfg = TrainConfig(**{"steps": steps, "questions_per_step": 4, "max_new_tokens": 8, "lr": 3e-3, "checkpoint_every": 0, "async_staleness": k, **kw})
    return Trainer(small_model(seed=1), TOK, method, ROWS, cfg, reward=FromCallable(has_seven))


def _weights(trainer):
    return [p.detach().clone() for p in trainer.policy.parameters()]


def test_k0_is_bitwise_the_synchronous_run():
    sync, k0 = _trainer(None), _trainer(0)
    h_sync, h_k0 = sync.run(progress=False), k0.run(progress=False)
    losses = [m["loss"] for m in h_sync]
    assert any(loss != 0 for loss in losses) and len(losses) == 10
    assert [m["loss"] for m in h_k0] == losses
    assert [m["reward/mean"] for m in h_k0] == [m["reward/mean"] for m in h_sync]
    assert all(torch.equal(a, b) for a, b in zip(_weights(sync), _weights(k0)))
    assert all(m["async/staleness"] == 0 for m in h_k0)
    assert "corrected" not in repr(k0.coefficient.terms)  # in lockstep nothing is stale: no weight


@pytest.mark.parametrize("k", [1, 2])
def test_stale_runs_lag_at_most_k_and_say_so(k):
    t = _trainer(k, steps=8)
    seen, produce = [], t.producer.produce

    def watched(n):
        r = produce(n)
        seen.append((t.step_count, r.versions.tolist()))
        return r

    t.producer.produce = watched
    h = t.run(progress=False)
    lags = [m["async/staleness"] for m in h]
    assert max(lags) >= 1 and all(0 <= lag <= k for lag in lags)
    for (step, versions), lag in zip(seen, lags):
        assert set(versions) == {step - lag}  # every row carries the version that sampled it
    assert all(sum(m[f"async/staleness_{j}"] for j in range(k + 1)) == 1 for m in h)
    assert "token_mask" in repr(t.coefficient.terms)  # auto: decoupled PPO's weight on stale samples
    stale = [m for m in h if m["async/staleness"] > 0]
    assert any(m["async/ratio_max"] != 1 for m in stale) and all(0 < m["async/ess"] <= 1 for m in stale)
    assert all(m["time/weight_sync"] >= 0 and m["time/worker_generate"] > 0 for m in h)


def test_resumed_k0_run_is_bitwise_the_straight_one(tmp_path):
    straight = _trainer(0, steps=6)
    straight.run(progress=False)
    first = _trainer(0, steps=3, checkpoint_every=3, out_dir=str(tmp_path))
    first.run(progress=False)
    second = _trainer(0, steps=6, out_dir=str(tmp_path))
    second.resume(os.path.join(tmp_path, "checkpoint"))
    h = second.run(progress=False)[3:]  # the history holds the first run's steps too
    assert [m["step"] for m in h] == [4, 5, 6]
    assert [m["loss"] for m in h] == [m["loss"] for m in straight.history[3:]]
    assert all(torch.equal(a, b) for a, b in zip(_weights(straight), _weights(second)))


class _KillAt:
    """A logger that sends ``sig`` to the rollout worker after step ``at``."""

    def __init__(self, trainer_box, at, sig):
        self.box, self.at, self.sig = trainer_box, at, sig

    def log(self, metrics, step):
        if step == self.at:
            os.kill(self.box[0].producer.process.pid, self.sig)

    def completions(self, rows, step):
        pass

    def close(self):
        pass


def _victim(tmp_path, sig, at=3, **kw):
    box = []
    method = url.methods.grpo(group_size=4)
    cfg = TrainConfig(steps=8, questions_per_step=4, max_new_tokens=8, lr=3e-3, checkpoint_every=0, async_staleness=1,
                      out_dir=str(tmp_path), **kw)
    t = Trainer(small_model(seed=1), TOK, method, ROWS, cfg, reward=FromCallable(has_seven), logger=_KillAt(box, at, sig))
    box.append(t)
    return t


def test_a_killed_worker_stops_the_run_with_a_checkpoint_that_resumes(tmp_path):
    t = _victim(tmp_path, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(RolloutWorkerError, match=r"died with exit code -9 .*checkpoint after step [34] is in") as e:
        t.run(progress=False)  # with K = 1 the batch already on the queue may still be trained on
    assert time.monotonic() - t0 < 60 and "\n" not in str(e.value)
    done = t.step_count
    again = _trainer(1, steps=8, out_dir=str(tmp_path))
    again.resume(os.path.join(tmp_path, "checkpoint"))
    assert again.step_count == done
    assert [m["step"] for m in again.run(progress=False)][-(8 - done):] == list(range(done + 1, 9))


def test_a_hung_worker_stops_the_run_within_the_timeout(tmp_path):
    t = _victim(tmp_path, signal.SIGSTOP, at=2, async_timeout_s=3.0)
    t0 = time.monotonic()
    with pytest.raises(RolloutWorkerError, match=r"sent no batch in async_timeout_s = 3 s"):
        t.run(progress=False)
    assert time.monotonic() - t0 < 30
    assert t.producer.process is None  # the stopped worker was killed, not left behind
    assert os.path.isdir(os.path.join(tmp_path, "checkpoint"))


def test_the_command_line_stops_with_one_line_when_the_worker_dies(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unified_rl.apps.cli", "train", "--method", "grpo", "--steps", "40", "--async-staleness", "1",
           "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "8", "--checkpoint-every", "0", "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    try:
        os.kill(_spawned_child(proc.pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 1 and lines[-1].startswith("unified-rl train: stopped: the rollout worker"), err[-2000:]
    assert "died with exit code -9" in lines[-1] and "checkpoint after step" in lines[-1] and "Traceback" not in err
    step = int(lines[-1].split("checkpoint after step ")[1].split()[0])
    state = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert step >= 2 and state[-1]["step"] == step


def _spawned_child(parent: int) -> int:
    """The rollout worker: the child of ``parent`` that multiprocessing spawned (not its resource tracker)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if ppid == parent and "spawn_main" in cmdline:
            return int(pid)
    raise AssertionError(f"no rollout worker under pid {parent}")


def test_async_needs_a_method_that_samples():
    cfg = TrainConfig(steps=1, questions_per_step=2, async_staleness=1)
    with pytest.raises(ValueError, match="does not sample from the policy"):
        Trainer(small_model(), TOK, url.methods.sft(), ROWS, cfg)
    with pytest.raises(ValueError, match="async_staleness"):
        TrainConfig(async_staleness=-1)
