"""What the training-pass changes buy, on one GRPO batch, alternating in one process:

    A  micro-batches filled greedily (longest first), prompts once per micro-batch
    B  micro-batches cut by dynamic programming, prompts once per micro-batch
    C  (current) prompts once per batch, micro-batches cut by completion length

for the update phase's engine backward and for the reference pass (same numbers in all three).

    python benchmarks/update_ablation.py [--width 128] [--precision fp32] [--rounds 7]
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import machine  # noqa: E402

import unified_rl as url  # noqa: E402
from unified_rl import batching, engine  # noqa: E402
from unified_rl.hf import logprobs as hf_logprobs  # noqa: E402
from unified_rl.config import TrainConfig  # noqa: E402
from unified_rl.loop import Trainer  # noqa: E402
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer  # noqa: E402
from unified_rl.hf import tiny_llama  # noqa: E402

DP_CUT = batching.micro_batches
PROMPT_PASS = hf_logprobs.prompt_pass


def greedy_cut(rollout, max_tokens, keep_groups, lengths=None):
    """The greedy cut: rows longest first, a micro-batch closes when the next row would overflow."""
    lengths = rollout.attention_mask.sum(-1).tolist()
    order = sorted(range(rollout.batch_size), key=lambda i: -lengths[i])
    rows, longest = [], 0
    for i in order:
        if rows and max(longest, lengths[i]) * (len(rows) + 1) > max_tokens:
            yield rows
            rows, longest = [], 0
        rows, longest = rows + [i], max(longest, lengths[i])
    if rows:
        yield rows


@contextlib.contextmanager
def variant(name):
    batching.micro_batches = greedy_cut if name == "A" else DP_CUT
    hf_logprobs.prompt_pass = (lambda *a, **k: None) if name in "AB" else PROMPT_PASS
    try:
        yield
    finally:
        batching.micro_batches, hf_logprobs.prompt_pass = DP_CUT, PROMPT_PASS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden=a.width, heads=max(4, a.width // 32), intermediate=3 * a.width)
    cfg = TrainConfig(steps=10, questions_per_step=16, max_new_tokens=40, precision=a.precision)
    trainer = Trainer(model, tok, url.methods.grpo(beta=0.04, group_size=8), ArithmeticTask().train_rows(64), cfg,
                      reward=url.rewards.FromCallable(lambda prompts, completions, **_: [float(len(c) % 3 == 0) for c in completions]))
    r = trainer.source.sample(trainer.policy, 16)
    r = trainer.reward(r, r.texts)
    r = trainer.coefficient.prepare(r.replace(ref_logprobs=trainer.reference.logprobs(r, trainer.plan)))
    plan = engine.ExecutionPlan(max_tokens=cfg.model.max_tokens, precision=a.precision)

    def update():
        model.zero_grad(set_to_none=True)
        return engine.backward(model, r, trainer.coefficient, plan).logprobs

    def reference():
        return trainer.reference.logprobs(r, plan)

    times = {(v, p): [] for v in "ABC" for p in ("update", "reference")}
    for k in range(a.rounds + 1):  # round 0 is warm-up
        for v in "ABC":
            with variant(v):
                for phase, fn in (("update", update), ("reference", reference)):
                    t = time.perf_counter()
                    fn()
                    if k:
                        times[v, phase].append(time.perf_counter() - t)
    padded = {}
    for v in "ABC":
        with variant(v):
            prompts = hf_logprobs.prompt_pass(model, r.input_ids, r.attention_mask, r.completion_mask, max_tokens=cfg.max_tokens)
            lengths = hf_logprobs.suffix_lengths(prompts) if prompts is not None else None
            padded[v] = sum(len(rows) * max(int((lengths if lengths is not None else r.attention_mask.sum(-1))[i]) for i in rows)
                            for rows in batching.micro_batches(r, cfg.max_tokens, False, lengths))
    print(f"machine: {machine()}")
    print(f"model: Llama width {a.width}, {a.precision}; one GRPO batch of {r.batch_size} rows, "
          f"{r.num_completion_tokens} completion tokens; median of {a.rounds} alternating rounds\n")
    print("| variant | engine backward (s) | reference pass (s) | size of the cut: sum of rows x longest (C: completion lengths) |")
    print("|---|---|---|---|")
    for v, label in zip("ABC", ("A greedy cut, prompts per micro-batch", "B optimal cut, prompts per micro-batch",
                                "C prompts once per batch, cut by completion length")):
        print(f"| {label} | {statistics.median(times[v, 'update']):.3f} | {statistics.median(times[v, 'reference']):.3f} | {padded[v]} |")


if __name__ == "__main__":
    main()
