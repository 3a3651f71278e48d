"""``unified-rl train --env module:Factory`` end to end on the embedded task: a working environment
trains; each bad one leaves its episodes unscored, says so in a warning and a metric, and the run
finishes; a mistake in the flag is one line and exit 2."""

import json
import os
import shutil
import subprocess
import sys

import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "cli_envs.py")


def _train(tmp_path, env, *extra):
    """``unified-rl train`` on episodes of ``env`` (None: the method, environment and turns come from ``extra``'s recipe)."""
    shutil.copy(FIXTURE, tmp_path / "cli_envs.py")
    exe = shutil.which("unified-rl")
    named = ["--method", "grpo", "--env", env, "--max-turns", "2"] if env else []
    cmd = ([exe] if exe else [sys.executable, "-m", "unified_rl.apps.cli"]) + [
        "train", *named, "--steps", "2", "--questions-per-step", "2", "--group-size", "2",
        "--max-new-tokens", "12", "--env-timeout-s", "1", "--max-observation-tokens", "64", "--out", "run", *extra]
    env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env_vars)


def _metrics(tmp_path):
    return [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"env/turns"' in line]


def test_a_working_environment_trains_from_a_recipe(tmp_path):
    (tmp_path / "agent.toml").write_text('method = "grpo"\nenv = "cli_envs:Checker"\nmax_turns = 2\n')
    out = _train(tmp_path, None, "--config", "agent.toml")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = _metrics(tmp_path)
    assert len(rows) == 2 and all(r["env/errors"] == 0 and r["env/timeouts"] == 0 and r["reward/unscored"] == 0 for r in rows)
    assert all(1 <= r["env/turns"] <= 2 for r in rows) and os.path.exists(tmp_path / "run" / "model" / "model.safetensors")


@pytest.mark.parametrize("name, metric, says", [
    ("Raises", "env/errors", "step raised RuntimeError: the environment broke"),
    ("Hangs", "env/timeouts", "step did not return within 1 s"),
    ("Huge", "env/errors", "observation of 5000 tokens, over max_observation_tokens=64"),
    ("NonText", "env/errors", "non-text (int) as the reply's text"),
])
def test_a_bad_environment_is_named_counted_and_training_goes_on(tmp_path, name, metric, says):
    out = _train(tmp_path, f"cli_envs:{name}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"environment {name}" in out.stderr and says in out.stderr and "left unscored and training goes on" in out.stderr
    rows = _metrics(tmp_path)  # an episode whose first turn was cut at max_new_tokens never reached the environment's step
    assert len(rows) == 2 and all(r[metric] == r["reward/unscored"] for r in rows) and sum(r[metric] for r in rows) >= 2


def test_an_environment_that_never_ends_is_cut_at_max_turns(tmp_path):
    out = _train(tmp_path, "cli_envs:NeverEnds")
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(r["env/truncated"] > 0 for r in _metrics(tmp_path))


@pytest.mark.parametrize("spec, says", [
    ("cli_envs", "expected module:Factory"),
    ("no_such_module:X", "no module 'no_such_module'"),
    ("cli_envs:Missing", "module 'cli_envs' has no 'Missing'"),
    ("cli_envs:not_an_environment", "does not satisfy url.Environment"),
    ("cli_envs:BadTool", "tool 'lookup' has no usable schema"),
])
def test_a_wrong_env_flag_is_one_line(tmp_path, spec, says):
    out = _train(tmp_path, spec)
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
