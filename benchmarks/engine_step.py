"""Engine step vs a hand-written loss vs the naive full-logits path (a micro-benchmark).

Same model, same GRPO batch, same coefficient maths; three ways to get the gradient:
  engine      url.engine.backward(model, rollout, grpo)  (chunked loss head at completion positions)
  hand        completion_logprobs (same chunked head) + the GRPO loss written inline
  naive       model(...).logits (full fp32 [batch, seq, vocab]) -> log_softmax -> gather -> same loss
Time: median seconds per step, variants interleaved in one process, the order rotated each round.
Memory: each variant in a fresh process; peak RSS growth during one step (kernel VmHWM), for the
whole step and for the loss head alone (the step minus a trunk-only forward/backward).

    python benchmarks/engine_step.py [--vocab 32000 152064] [--repeats 5]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import unified_rl as url
from unified_rl.hf.logprobs import completion_logprobs

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _machine import machine, peak_rss_reset, rss_kib  # noqa: E402

BATCH, PROMPT, COMPLETION, HIDDEN = 8, 64, 192, 256


def setup(vocab: int):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg)
    seq = PROMPT + COMPLETION
    ids = torch.randint(0, vocab, (BATCH, seq))
    attn = torch.ones(BATCH, seq, dtype=torch.bool)
    comp = torch.zeros(BATCH, seq, dtype=torch.bool)
    comp[:, PROMPT:] = True
    with torch.no_grad():
        lp = completion_logprobs(model, ids, attn, comp)
    g = torch.Generator().manual_seed(1)
    r = url.Rollout(ids, attn, comp, group_ids=torch.arange(BATCH) // 4, rewards=torch.randint(0, 2, (BATCH,), generator=g).float(),
                    old_logprobs=lp + 0.05 * torch.randn(lp.shape, generator=g) * comp, ref_logprobs=lp + 0.05 * torch.randn(lp.shape, generator=g) * comp)
    method = url.methods.grpo(beta=0.04, epsilon=0.2)
    return model, method.coefficient.prepare(r), method.coefficient


def grpo_loss(logp, r, beta=0.04, eps=0.2):
    m = r.completion_mask
    w = r.weights.float()
    rho = torch.exp(logp - r.old_logprobs)
    adv = r.advantages.float()
    surrogate = torch.minimum(rho * adv, rho.clamp(1 - eps, 1 + eps) * adv)
    log_kappa = r.ref_logprobs - logp
    k3 = torch.exp(log_kappa) - log_kappa - 1
    return -(torch.where(m, w * (surrogate - beta * k3), 0.0)).sum()


def step(variant: str, model, r, coef) -> None:
    model.zero_grad(set_to_none=True)
    if variant == "engine":
        url.engine.backward(model, r, coef)
        return
    if variant == "hand":
        logp = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    elif variant == "naive":
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, r.input_ids[:, 1:, None]).squeeze(-1)
        logp = torch.cat([torch.zeros_like(logp[:, :1]), logp], 1)
    elif variant == "trunk":  # the trunk alone: what every variant pays besides the loss head
        h = model.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).last_hidden_state
        h.float().pow(2).mean().backward()
        return
    grpo_loss(logp, r).backward()


def memory_child(variant: str, vocab: int) -> None:
    model, r, coef = setup(vocab)
    step(variant, model, r, coef)  # warm-up: gradient buffers and allocator pools exist from here on
    model.zero_grad(set_to_none=False)
    before = rss_kib("VmRSS")
    peak_rss_reset()
    step(variant, model, r, coef)
    print(json.dumps({"peak_growth_mib": (rss_kib("VmHWM") - before) / 1024}))


def measure_memory(variant: str, vocab: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", variant, "--vocab", str(vocab)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 152064])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-child")
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.vocab[0])
    variants = ["engine", "hand", "naive"]
    print(f"machine: {machine()}")
    print(f"batch {BATCH} x ({PROMPT} prompt + {COMPLETION} completion) tokens, Llama 2 layers width {HIDDEN}, GRPO coefficient, fp32\n")
    print("| vocab | variant | median s/step | vs hand | peak RSS growth, step (MiB) | loss-head peak (MiB) | vs naive |")
    print("|---|---|---|---|---|---|---|")
    for vocab in args.vocab:
        model, r, coef = setup(vocab)
        for v in variants:
            step(v, model, r, coef)  # warm-up
        times = {v: [] for v in variants}
        for i in range(args.repeats):
            for v in variants[i % 3:] + variants[: i % 3]:  # rotate the order: no variant always runs first
                t = time.perf_counter()
                step(v, model, r, coef)
                times[v].append(time.perf_counter() - t)
        med = {v: statistics.median(times[v]) for v in variants}
        trunk = measure_memory("trunk", vocab)
        mem = {v: measure_memory(v, vocab) for v in variants}
        head = {v: max(mem[v] - trunk, 0.0) for v in variants}
        for v in variants:
            print(f"| {vocab} | {v} | {med[v]:.3f} | {med[v] / med['hand']:.3f}x | {mem[v]:.0f} | {head[v]:.0f} | {head[v] / head['naive']:.3f}x |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
