"""Padding-free (packed) training vs padded micro-batches, side by side in one process.

A batch whose rows have a realistic spread of lengths (prompts 32-128 tokens, completions drawn
log-uniform from 16 to --max-completion), every row with its own prompt (SFT-like: nothing to
share); engine.backward of one SFT update with ExecutionPlan(packed=False) and (packed=True),
alternating, medians. Prints the padded-token share of the padded micro-batches and the speed-up.

    python benchmarks/packing.py [--width 256] [--rows 32] [--max-completion 512] [--rounds 5]
"""

import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

import unified_rl as url  # noqa: E402
from unified_rl.batching import micro_batch_views  # noqa: E402
from unified_rl.hf import tiny_llama  # noqa: E402


def batch(rows: int, max_completion: int, vocab: int, seed: int = 0) -> url.Rollout:
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(32, 129, (rows,), generator=g)
    c = torch.exp(torch.empty(rows).uniform_(math.log(16), math.log(max_completion), generator=g)).long()
    seq = int((p + c).max())
    pos = torch.arange(seq)[None]
    attn = pos < (p + c)[:, None]
    comp = (pos >= p[:, None]) & attn
    ids = torch.where(attn, torch.randint(4, vocab, (rows, seq), generator=g), 0)
    return url.Rollout(ids, attn, comp, group_ids=torch.arange(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max-completion", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per micro-batch (the Trainer's default is 4096)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = tiny_llama(a.vocab, hidden=a.width, layers=a.layers, heads=max(2, a.width // 64), intermediate=3 * a.width, max_positions=1024)
    r = batch(a.rows, a.max_completion, a.vocab)
    method = url.methods.sft()
    prepared = method.coefficient.prepare(r)
    views = [mb for _, _, _, mb in micro_batch_views(prepared, a.max_tokens, False)]
    padded = sum(mb.input_ids.numel() for mb in views)
    real = int(r.attention_mask.sum())
    times = {False: [], True: []}

    def step(packed: bool) -> None:
        model.zero_grad(set_to_none=True)
        url.engine.backward(model, prepared, method.coefficient, url.ExecutionPlan(max_tokens=a.max_tokens, share_prefix=False, packed=packed))

    step(False), step(True)
    for k in range(a.rounds):
        for packed in ((False, True) if k % 2 == 0 else (True, False)):
            t = time.perf_counter()
            step(packed)
            times[packed].append(time.perf_counter() - t)
    n = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"model: Llama {n / 1e6:.1f}M parameters (width {a.width}, {a.layers} layers, vocab {a.vocab}); {a.rows} rows, "
          f"prompts 32-128, completions 16-{a.max_completion} (log-uniform), {len(views)} micro-batches of <= {a.max_tokens} padded tokens")
    print(f"real tokens {real}, padded tokens {padded}: padding is {100 * (padded - real) / padded:.1f}% of the padded micro-batches\n")
    print("| pass | median s (range) | speed-up |")
    print("|---|---|---|")
    base = statistics.median(times[False])
    for packed in (False, True):
        t = times[packed]
        print(f"| {'packed' if packed else 'padded'} | {statistics.median(t):.3f} ({min(t):.3f}-{max(t):.3f}) | {base / statistics.median(t):.2f}x |")


if __name__ == "__main__":
    main()
