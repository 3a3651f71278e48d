"""Multi-turn episodes, side by side in one run: episodes per second of a GRPO step on 1-, 2- and
4-turn episodes with the static-cache decoder and with transformers' ``generate``, and where a
step's time goes (the environment, generation, log-probs, the update).

    python benchmarks/episodes.py                 # the benchmarks' SFT start, 8 questions x G = 8
    python benchmarks/episodes.py --steps 5 --questions 16

The environment answers each turn with a short observation ("=<answer>;", as a checker would) until
its turn count is reached, then scores the last turn; it costs little on purpose, so the table shows
what the loop itself spends around an environment. Same model, rows, seed and settings in every cell.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402


def checker(turns: int):
    from unified_rl.environments import Environment, Reply

    class Checker(Environment):
        def reset(self, row):
            self.answer, self.right = str(row["answer"]), False
            return None

        def step(self, turn):
            self.right = turn.text.rpartition("#")[2].strip() == self.answer
            if turn.index + 1 >= turns:
                return Reply(done=True)
            return Reply(text="=" + self.answer + ";", reward=float(self.right))

        def reward(self):
            return float(self.right)

    return Checker


def run_cell(sampler: str, turns: int, args) -> dict:
    from safetensors.torch import load_file

    import unified_rl as url
    from unified_rl.apps.demo import BENCHMARK_START
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer
    from unified_rl.environments import Limits, with_environment
    from unified_rl.hf import tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=0, max_positions=512)
    model.load_state_dict(load_file(BENCHMARK_START), strict=True)
    rows = ArithmeticTask(min_steps=2, max_steps=3).train_rows(512)
    method = with_environment(url.methods.grpo(beta=0.04, group_size=args.group_size), checker(turns),
                              Limits(max_turns=turns, max_tokens=turns * (args.max_new_tokens + 8)))
    cfg = url.config.TrainConfig(steps=args.steps + 1, questions_per_step=args.questions, lr=1e-5, max_new_tokens=args.max_new_tokens,
                                 sampler=sampler, seed=0)
    trainer = url.loop.Trainer(model, tok, method, rows, cfg)
    steps = []
    for k in range(args.steps + 1):
        t = time.perf_counter()
        m = trainer.train_step()
        m["wall"] = time.perf_counter() - t
        if k:  # the first step warms up
            steps.append(m)
    wall = statistics.median(s["wall"] for s in steps)
    env = statistics.median(s["time/environment"] for s in steps)
    gen = statistics.median(s["time/generate"] for s in steps) - env
    return {"sampler": sampler, "turns": turns, "episodes/s": args.questions * args.group_size / wall, "s/step": wall,
            "env": env / wall, "generate": gen / wall, "logprobs": statistics.median(s["time/logprobs"] for s in steps) / wall,
            "update": statistics.median(s["time/update"] for s in steps) / wall,
            "turns/episode": statistics.mean(s["env/turns"] for s in steps), "model share": statistics.mean(s["env/model_token_share"] for s in steps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per cell (after one warm-up step); medians are reported")
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"machine: {machine()}")
    print(f"GRPO step, {args.questions} questions x G = {args.group_size}, <= {args.max_new_tokens} new tokens per turn, "
          f"median of {args.steps} steps after a warm-up\n")
    print("| sampler | turns (limit) | turns / episode | episodes/s | s/step | environment | generation | log-probs | update | model's token share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sampler in ("static", "hf"):
        for turns in (1, 2, 4):
            c = run_cell(sampler, turns, args)
            print(f"| {c['sampler']} | {c['turns']} | {c['turns/episode']:.2f} | {c['episodes/s']:.1f} | {c['s/step']:.2f} | {c['env']:.1%} | "
                  f"{c['generate']:.1%} | {c['logprobs']:.1%} | {c['update']:.1%} | {c['model share']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
