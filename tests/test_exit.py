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


def test_a_rank_that_cannot_leave_exits_with_one_line():
    """The teardown has a timeout: a process group whose destruction never returns (here it waits
    far past the watchdog) costs that many seconds and one line, not a hung job."""
    code = """
import os, time
import torch.distributed as dist
os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
dist.init_process_group("gloo")
dist.destroy_process_group = lambda: time.sleep(60)  # a teardown that does not come back
from unified_rl.hf import leave_process_group
leave_process_group(timeout_s=1)
print("not reached")
"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env={**os.environ, "PORT": port})
    assert done.returncode == 1 and "not reached" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if "leaving the process group" in line]
    assert lines == ["unified_rl: rank 0: leaving the process group did not finish in 1 s; exiting with status 1"], done.stderr[-2000:]
