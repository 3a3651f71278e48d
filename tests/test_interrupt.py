"""Ctrl-C keeps the work: the real ``unified-rl train`` finishes the step it is in, saves a checkpoint,
the metrics, the plot and the model, prints how to resume and exits 130; ``--resume`` continues from
there; a second Ctrl-C stops at once, without a traceback."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(out, *flags):
    exe = shutil.which("unified-rl")
    cmd = ([exe] if exe else [sys.executable, "-m", "unified_rl.apps.cli"]) + ["train", "--method", "grpo", "--out", str(out), "--no-progress",
                                                                           *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _wait_for_steps(out, n, proc, timeout=300, phase=None):
    path, t0 = out / "metrics.jsonl", time.time()
    while time.time() - t0 < timeout:
        lines = path.read_text().splitlines() if path.exists() else []
        if sum(1 for line in lines if '"loss"' in line and (phase is None or f'"phase": "{phase}"' in line)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no training steps were logged")


def test_ctrl_c_finishes_the_step_saves_everything_and_resumes(tmp_path):
    out = tmp_path / "o"
    small = ["--questions-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--eval-size", "4"]
    proc = _start(out, "--steps", "10000", *small)
    _wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Ctrl-C: finishing" in stderr
    step = int(re.search(r"interrupted after step (\d+) of 10000", stdout).group(1))
    assert "continue with: unified-rl train --method grpo" in stdout and stdout.strip().endswith("--resume")
    for name in ("checkpoint", "model", "metrics.csv", "metrics.jsonl", "plot.png"):
        assert (out / name).exists(), name
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in logged if "loss" in m) == step  # the step in progress was finished and kept

    proc = _start(out, "--steps", str(step + 2), *small, "--resume")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"resumed from {out / 'checkpoint'} at step {step}" in stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, step + 3))  # no step lost, none twice


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    out = tmp_path / "o"
    proc = _start(out, "--steps", "10000", "--questions-per-step", "32", "--group-size", "8", "--max-new-tokens", "48", "--eval-size", "4")
    _wait_for_steps(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "stopped (a second Ctrl-C)" in stderr
    assert not (out / "checkpoint").exists()  # it did not wait for the step to finish


def test_ctrl_c_in_the_demo_keeps_what_was_done(tmp_path):
    out = tmp_path / "demo"
    exe = shutil.which("unified-rl")
    cmd = ([exe] if exe else [sys.executable, "-m", "unified_rl.apps.cli"]) + ["demo", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    _wait_for_steps(out, 2, proc, phase="grpo")  # the SFT start is shipped; GRPO runs here
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted during grpo step" in stdout
    for name in ("metrics.csv", "plot.png", "model", "checkpoint"):
        assert (out / name).exists(), name
