"""What every command that trains shares: its output folder checked, the progress-bar and thread
flags, and the thread policy."""

import argparse
import os
from typing import Optional


def _out_folder(out: Optional[str]) -> None:
    """``--out`` must be a folder (or not exist yet); checked before any work."""
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The options of every command that trains: the progress bar and the thread policy."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--adapt-threads", action="store_true",
                   help="refit torch's CPU threads to the free cores before every step (faster on a shared machine; "
                        "the numbers then depend on the load, so two runs are no longer bitwise equal)")


def _threads(args) -> None:
    """A training command's CPU threads: capped once at the cores this process may use (the same
    count for the whole run, so its numbers do not depend on the machine's load); with
    ``--adapt-threads``, refitted to the free cores before every step (``threads.per_step``)."""
    from .. import threads

    if args.adapt_threads:
        os.environ["UNIFIED_RL_ADAPT_THREADS"] = "1"
    threads.fit_threads()
