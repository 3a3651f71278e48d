"""Shared prompts under activation checkpointing: the update's engine backward on one GRPO batch,
prompts run once per group (``share_prefix=True``) vs every row running its own prompt (the
per-row path), both with activation checkpointing on, alternating in one process; the gradients
are compared, and each variant's peak resident-memory growth is read from the kernel.

    python benchmarks/checkpointed_prompts.py [--width 512] [--prompt 64] [--completion 128] [--rounds 5]

The batch: ``--questions`` prompts of ``--prompt`` random tokens, G samples each, completions of
random length between half of ``--completion`` and ``--completion``; a Llama of 4 layers.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

import unified_rl as url  # noqa: E402
from unified_rl.apps.peak_memory import peak, reset_peak  # noqa: E402
from unified_rl.data import to_rollout  # noqa: E402
from unified_rl.hf import enable_activation_checkpointing, tiny_llama  # noqa: E402


def batch(a) -> url.Rollout:
    """Right-padded rows (``to_rollout``): each question's prompt, then a random completion; rewards."""
    g = torch.Generator().manual_seed(0)
    prompts, completions = [], []
    for _ in range(a.questions):
        prompt = torch.randint(3, a.vocab, (a.prompt,), generator=g).tolist()
        for _ in range(a.group):
            n = int(torch.randint(a.completion // 2, a.completion + 1, (1,), generator=g))
            prompts.append(prompt)
            completions.append(torch.randint(3, a.vocab, (n,), generator=g).tolist())
    groups = [q for q in range(a.questions) for _ in range(a.group)]
    r = to_rollout(prompts, completions, pad_id=0, group_ids=groups)
    return r.replace(rewards=torch.randint(0, 2, (len(prompts),), generator=g).double())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per forward call (ExecutionPlan.max_tokens)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = tiny_llama(a.vocab, hidden=a.width, heads=max(4, a.width // 32), intermediate=3 * a.width, max_positions=1024).train()
    enable_activation_checkpointing(model)
    grpo = url.methods.grpo(group_size=a.group, beta=0.0).coefficient
    r = batch(a)
    with torch.no_grad():
        r = grpo.prepare(r.replace(old_logprobs=url.engine.logprobs(model, r)))
    times, peaks, grads = {True: [], False: []}, {True: [], False: []}, {}
    for k in range(a.rounds + 1):  # the first round is warm-up
        for share in (True, False):
            model.zero_grad(set_to_none=True)
            base = reset_peak()
            t = time.perf_counter()
            url.engine.backward(model, r, grpo, url.ExecutionPlan(max_tokens=a.max_tokens, share_prefix=share))
            if k:
                times[share].append(time.perf_counter() - t)
                peaks[share].append(peak() - base)
            grads[share] = [p.grad.clone() for p in model.parameters()]
    diff = max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)) for x, y in zip(grads[True], grads[False]))
    per_row = statistics.median(times[False])
    print(f"machine: {machine()}")
    print(f"model: Llama 4 layers, width {a.width}, vocab {a.vocab}, activation checkpointing on; {a.questions} prompts of "
          f"{a.prompt} tokens x G={a.group}, completions {a.completion // 2}-{a.completion} tokens "
          f"({int(r.completion_mask.sum())} completion tokens), max_tokens {a.max_tokens}, fp32; {a.rounds} rounds alternating\n")
    print("| training pass | engine backward, median s (range) | peak RSS growth, median MiB | speed-up |")
    print("|---|---|---|---|")
    for name, share in (("prompts once per group", True), ("every row its own prompt", False)):
        print(f"| {name} | {statistics.median(times[share]):.3f} ({min(times[share]):.3f}-{max(times[share]):.3f}) | "
              f"{statistics.median(peaks[share]) / 2**20:.0f} | {per_row / statistics.median(times[share]):.2f}x |")
    print(f"\nlargest relative gradient difference between the two (per parameter, vs its largest entry): {diff:.1e}")


if __name__ == "__main__":
    main()
