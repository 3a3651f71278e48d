"""Sampling speed: unified_rl's lean decode step (StaticDecoder) vs decoding through transformers'
forward, on the same model, prompts and random stream, alternating in one process.

    python benchmarks/decode.py [--width 128] [--precision fp32] [--rounds 7]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

from unified_rl.hf.sampling import generate  # noqa: E402
from unified_rl.precision import autocast  # noqa: E402
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer  # noqa: E402
from unified_rl.hf import tiny_llama  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden=a.width, heads=max(4, a.width // 32), intermediate=3 * a.width)
    prompts = [[tok.convert_tokens_to_ids(c) for c in r["prompt"]] for r in ArithmeticTask().train_rows(a.questions)]
    times: dict[bool, list[float]] = {True: [], False: []}
    tokens = {}
    for r in range(a.rounds + 1):  # round 0 is warm-up
        for fast in (True, False):
            with autocast(model, a.precision):
                t = time.perf_counter()
                out = generate(model, prompts, group_size=a.group, max_new_tokens=a.max_new_tokens, eos_id=tok.eos_token_id,
                               pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(r), fast_decode=fast)
                if r:
                    times[fast].append(time.perf_counter() - t)
            tokens[fast] = sum(len(c) for c in out.completion_ids)
    fast, slow = statistics.median(times[True]), statistics.median(times[False])
    print(f"machine: {machine()}")
    print(f"model: Llama width {a.width}, {a.precision}; {a.questions} prompts x G={a.group}, at most {a.max_new_tokens} new tokens; "
          f"median of {a.rounds} alternating rounds\n")
    print("| decode | median s/generate | completion tokens (last round) |")
    print("|---|---|---|")
    print(f"| StaticDecoder (unified_rl) | {fast:.4f} | {tokens[True]} |")
    print(f"| transformers forward + DynamicCache | {slow:.4f} | {tokens[False]} |")
    print(f"\nratio: {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
