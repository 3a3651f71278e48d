"""Update-phase throughput and model-FLOPs utilisation on a GPU (issue 5, item 4).

A Qwen2-0.5B-shaped model built from a config (no download), bf16 weights, fp32 log-softmax
accumulation in the engine's chunked loss head; one GRPO update (engine.backward + AdamW) on a
random batch. Prints tokens/s, MFU = 6 * parameters * tokens / time / peak, and peak memory.
Runs unchanged on CPU with --tiny (for a smoke test; MFU is then meaningless).

    python benchmarks/gpu_update.py [--batch 16] [--prompt 256] [--completion 768] [--peak-tflops 989]
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
from unified_rl.hf import build_qwen2, qwen2_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--completion", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the device (H100 SXM: 989)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer width-64 Qwen2 (CPU smoke test)")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = qwen2_config(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=1024) if a.tiny else qwen2_config()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build_qwen2(cfg).to(device=device, dtype=dtype)
    if hasattr(model.config, "_attn_implementation"):
        model.config._attn_implementation = "sdpa"
    n_params = sum(p.numel() for p in model.parameters())
    seq = a.prompt + a.completion
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, seq), generator=g).to(device)
    attn = torch.ones(a.batch, seq, dtype=torch.bool, device=device)
    comp = torch.zeros_like(attn)
    comp[:, a.prompt:] = True
    zeros = torch.zeros(a.batch, seq, device=device)
    rollout = url.Rollout(ids, attn, comp, group_ids=torch.arange(a.batch, device=device) // 8,
                          rewards=torch.randint(0, 2, (a.batch,), generator=g).float().to(device), old_logprobs=zeros, ref_logprobs=zeros)
    method = url.methods.grpo(beta=0.04, group_size=8)
    prepared = method.coefficient.prepare(rollout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def update():
        opt.zero_grad(set_to_none=True)
        url.engine.backward(model, prepared, method.coefficient, url.ExecutionPlan(max_tokens=a.max_tokens))
        opt.step()

    update()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.repeats):
        sync()
        t = time.perf_counter()
        update()
        sync()
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    tokens = a.batch * seq
    flops = 6 * n_params * tokens
    print(f"machine: {machine()}")
    print(f"model: Qwen2-shaped, {n_params / 1e6:.0f}M parameters, {dtype}; batch {a.batch} x ({a.prompt} + {a.completion}) tokens")
    print(f"update (engine.backward + AdamW): median {sec:.3f} s, {tokens / sec:,.0f} tokens/s, "
          f"MFU {100 * flops / sec / (a.peak_tflops * 1e12):.1f}% of {a.peak_tflops:.0f} TFLOP/s")
    if device == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
