"""``unified-rl train`` under torchrun, with one rank SIGKILLed in the middle of a checkpoint save
(test_distributed.py). argv: RANK STEP WHERE -- train flags. WHERE: ``shards`` (after the rank wrote
its DCP shards, before the others finished) or ``rename`` (rank 0, between moving the old
checkpoint aside and moving the new one in). RANK -1: nobody dies. Either way a rank that returns
must have destroyed its process group (else gloo can abort it at exit: pytorch/pytorch#190489)."""

import os
import signal
import sys

import torch

from unified_rl import sharded_checkpoint
from unified_rl.apps import cli

victim, at_step, where = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rank = int(os.environ["RANK"])
saves = {"n": 0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


real_save_state, real_replace = sharded_checkpoint.save_state, os.replace


def save_state(state, folder, meta=None):  # each rank's own part, written right after its DCP shards
    saves["n"] += 1
    if where == "shards" and rank == victim and saves["n"] == at_step:
        die()
    return real_save_state(state, folder, meta)


def replace(src, dst):
    if where == "rename" and rank == victim and saves["n"] == at_step and str(dst).endswith("checkpoint") and not os.path.exists(dst):
        die()  # the old checkpoint is already checkpoint.prev; the new one never arrives
    return real_replace(src, dst)


sharded_checkpoint.save_state = save_state
os.replace = replace
status = cli.main(sys.argv[5:])
assert not torch.distributed.is_initialized(), "unified-rl train returned without destroying the process group"
sys.exit(status)
