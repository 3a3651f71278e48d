"""Exit stress: a 2-rank torchrun job started many times, counting ranks that do not end cleanly.

    python benchmarks/exit_stress.py                      # 40 runs each of ddp, fsdp and cli
    python benchmarks/exit_stress.py --runs 4 --cases ddp

Each run is a real ``torchrun --standalone --nproc_per_node=2`` job on gloo:

* ``ddp`` / ``fsdp`` -- a user's script: wrap the policy with ``unified_rl.hf.ddp`` (or ``fsdp``),
  run ``engine.backward`` on a sampled GRPO batch three times, ``unified_rl.hf.leave_process_group()``,
  print ``done`` and let Python exit as it will;
* ``cli`` -- ``unified-rl train`` (2 GRPO steps, a checkpoint each step, evaluation, export).

A run counts as clean when torchrun exits 0 and every rank printed ``done`` (``cli``: the model was
saved); as a hang when it outlives ``--timeout`` seconds (it is then killed); otherwise as an abort
(for example a rank killed by SIGABRT while the interpreter shut down).
"""

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

CLI = ["-m", "unified_rl.apps.cli", "train", "--method", "grpo", "--questions-per-step", "4", "--group-size", "4",
       "--max-new-tokens", "8", "--eval-size", "8", "--checkpoint-every", "1", "--steps", "2", "--out", "run", "--no-progress"]


def rank_script(wrapper: str) -> None:
    """One rank of the ``ddp`` / ``fsdp`` case (run by torchrun)."""
    import copy

    import torch

    import unified_rl as url
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer, task_reward
    from unified_rl.data import Encoder, SampledSource
    from unified_rl.hf import make_sampler, tiny_llama

    url.hf.init_process_group(timeout_s=60)
    rank = torch.distributed.get_rank()
    tok = char_tokenizer()
    model = tiny_llama(len(tok), hidden=32, layers=2, heads=2, intermediate=64)
    sampler_model = copy.deepcopy(model)  # sampling runs on a plain copy; the wrapped one trains
    torch.manual_seed(rank)
    source = SampledSource(ArithmeticTask().train_rows(8), Encoder(tok), make_sampler("static", tok), samples_per_question=4)
    method = url.methods.grpo(beta=0.0)
    wrapped = getattr(url.hf, wrapper)(model)
    for _ in range(3):
        rollout = source.sample(sampler_model, 2)
        rollout = method.coefficient.prepare(task_reward(method, tok)(rollout, rollout.texts))
        url.engine.backward(wrapped, rollout, method.coefficient)
    url.hf.leave_process_group()
    print(f"rank {rank} done", flush=True)


def one_run(case: str, folder: str, timeout: float) -> str:
    """``clean``, ``abort`` or ``hang`` for one torchrun job of ``case``."""
    script = CLI if case == "cli" else [os.path.abspath(__file__), "--rank", case]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, start_new_session=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        stdout, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # torchrun and its ranks: a hung rank outlives its launcher otherwise
        job.communicate()
        return "hang"
    done = subprocess.CompletedProcess(cmd, job.returncode, stdout)
    finished = (os.path.exists(os.path.join(folder, "run", "model")) if case == "cli"
                else done.stdout.count(" done") == 2)
    return "clean" if done.returncode == 0 and finished else "abort"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--cases", default="ddp,fsdp,cli")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds after which a run counts as a hang")
    p.add_argument("--rank", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank:
        return rank_script(args.rank)
    print(machine())
    counts = {}
    for case in args.cases.split(","):
        tally, t0 = collections.Counter(), time.perf_counter()
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                tally[one_run(case, folder, args.timeout)] += 1
        counts[case] = tally
        print(f"{case:5s} {args.runs} runs: clean {tally['clean']}, abort {tally['abort']}, hang {tally['hang']} "
              f"({(time.perf_counter() - t0) / args.runs:.1f} s per run)", flush=True)
    if any(t["clean"] != args.runs for t in counts.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
