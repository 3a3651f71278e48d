"""A 2-rank torchrun job ends cleanly every time: no rank killed by SIGABRT at interpreter exit, no
rank hung in a destructor (the user's-script cases of benchmarks/exit_stress.py, a few runs each)."""

import os
import subprocess
import sys

import pytest

STRESS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "exit_stress.py")


@pytest.mark.slow
def test_ddp_and_fsdp_scripts_end_cleanly_every_time():
    done = subprocess.run([sys.executable, STRESS, "--runs", "3", "--cases", "ddp,fsdp", "--timeout", "120"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "ddp   3 runs: clean 3, abort 0, hang 0" in done.stdout and "fsdp  3 runs: clean 3, abort 0, hang 0" in done.stdout
