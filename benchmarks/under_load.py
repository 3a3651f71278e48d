"""A GRPO step on a machine shared with busy processes (issue: reliability, item 7).

Runs the same GRPO steps (embedded tiny Llama, 16 questions x G = 8) in fresh processes, alone and
beside N single-threaded busy-looping processes: with a fixed thread count and OpenMP's default
waits (spin, then sleep) or ``OMP_WAIT_POLICY=PASSIVE``, with one thread, and with unified_rl's
default (threads fitted before each step to the cores other processes leave free). The fair share of a step beside
N busy processes on C cores is its time alone with C threads x (N + C) / C.

    python benchmarks/under_load.py [--busy N] [--steps 4]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

STEP = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import unified_rl as url
import torch
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
from unified_rl.config import TrainConfig
from unified_rl.hf import tiny_llama
from unified_rl.loop import Trainer
from unified_rl import threads
threads.fit_threads()  # as the command-line app does
tok = char_tokenizer()
cfg = TrainConfig(steps=100, questions_per_step=16, max_new_tokens=40, lr=1e-5)
reward = url.rewards.FromCallable(lambda prompts, completions, **_: [float(len(c) % 3 == 0) for c in completions])
t = Trainer(tiny_llama(len(tok)), tok, url.methods.grpo(group_size=8), ArithmeticTask().train_rows(256), cfg, reward=reward,
            adapt_threads=threads.per_step())
times = []
for _ in range(int(sys.argv[1]) + 1):
    s = time.perf_counter(); t.train_step(); times.append(time.perf_counter() - s)
print(json.dumps({"times": times[1:], "threads": torch.get_num_threads()}))
"""


def measure(steps: int, busy: int, env: dict, timeout: float) -> dict:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run([sys.executable, "-c", STEP, str(steps)], capture_output=True, text=True, timeout=timeout, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"times": [], "threads": None}
    finally:
        for h in hogs:
            h.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {machine()}; {cores} usable cores; {a.busy} busy processes when loaded; median of {a.steps} steps\n")
    print("| threads and waits | alone (s/step) | beside busy processes (s/step) | fair share (s/step) | loaded / fair share |")
    print("|---|---|---|---|---|")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "UNIFIED_RL_ADAPT_THREADS")}
    fixed = {"UNIFIED_RL_ADAPT_THREADS": "0"}  # the command-line default: one count for the run
    fair = None
    for label, extra in (("fixed threads, OpenMP default waits (spin, then sleep)", fixed),
                         ("fixed threads, passive waits (OMP_WAIT_POLICY=PASSIVE)", {**fixed, "OMP_WAIT_POLICY": "PASSIVE"}),
                         ("one thread (OMP_NUM_THREADS=1)", {"OMP_NUM_THREADS": "1"}),
                         ("threads fitted to the free cores each step (--adapt-threads)", {"UNIFIED_RL_ADAPT_THREADS": "1"})):
        env = {**base, **extra}
        alone = statistics.median(measure(a.steps, 0, env, a.timeout)["times"])
        loaded_times = measure(a.steps, a.busy, env, a.timeout)["times"]
        fair = fair or alone * (a.busy + cores) / cores  # the default's time alone sets the fair share
        if loaded_times:
            loaded = statistics.median(loaded_times)
            print(f"| {label} | {alone:.3f} | {loaded:.3f} | {fair:.3f} | {loaded / fair:.2f}x |")
        else:
            print(f"| {label} | {alone:.3f} | > {a.timeout:.0f} s for {a.steps + 1} steps | {fair:.3f} | > {a.timeout / (a.steps + 1) / fair:.0f}x |")


if __name__ == "__main__":
    main()
