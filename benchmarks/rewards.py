"""Step time with rewards that take time: serial vs concurrent, in one run, same batches.

A GRPO step on the embedded tiny model (16 questions x G = 8, the shipped SFT start) scored by:
  sleep-50ms   a reward that waits 50 ms per sample (a remote judge, a sandbox): serial
               ``FromCallable`` vs ``Concurrent(pool="thread", workers=16)``;
  math-verify  math-verify on each completion against the answer (CPU-bound Python): serial in the
               training process vs ``math_reward()`` (2 worker processes, cached).
Each variant runs the same seeds; reported: median seconds per step and the reward phase alone.

    python benchmarks/rewards.py [--steps 3]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402


def sleepy(prompts, completions, **_):
    time.sleep(0.05 * len(completions))
    return [float("7" in c) for c in completions]


def variants():
    from unified_rl.rewards import Concurrent, FromCallable, math_reward, verify_answer

    return {
        "sleep-50ms, serial": lambda: FromCallable(sleepy),
        "sleep-50ms, Concurrent(thread, 16)": lambda: Concurrent(sleepy, workers=16, pool="thread"),
        "math-verify, serial": lambda: FromCallable(verify_answer),
        "math-verify, math_reward() (2 processes, cached)": lambda: math_reward(workers=2),
    }


def run(make, steps: int) -> tuple[float, float]:
    import torch

    from unified_rl import methods
    from safetensors.torch import load_file

    from unified_rl.apps.demo import BENCHMARK_START
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
    from unified_rl.hf import tiny_llama
    from unified_rl.config import TrainConfig
    from unified_rl.loop import Trainer

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    model.load_state_dict(load_file(BENCHMARK_START), strict=True)
    rows = ArithmeticTask().train_rows(20_000, eval_size=256)
    cfg = TrainConfig(steps=steps + 1, questions_per_step=16, max_new_tokens=40, lr=3e-5, checkpoint_every=0)
    reward = make()
    trainer = Trainer(model, tok, methods.grpo(group_size=8), rows, cfg, reward=reward)
    trainer.train_step()  # warm-up: worker processes start, caches are cold for the next batches anyway
    steps_s, reward_s = [], []
    for _ in range(steps):
        t = time.perf_counter()
        m = trainer.train_step()
        steps_s.append(time.perf_counter() - t)
        reward_s.append(m["time/reward"])
    if hasattr(reward, "close"):
        reward.close()
    return statistics.median(steps_s), statistics.median(reward_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    print(f"machine: {machine()}")
    print("GRPO step, 16 questions x 8 samples, 40 new tokens, embedded tiny model\n")
    print("| reward | seconds per step (median) | of which reward | step time vs serial |")
    print("|---|---:|---:|---:|")
    serial = {}
    for name, make in variants().items():
        step, reward = run(make, a.steps)
        kind = name.split(",")[0]
        serial.setdefault(kind, step)
        print(f"| {name} | {step:.2f} | {reward:.2f} | {step / serial[kind]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
