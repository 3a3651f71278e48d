"""Padding-free training on the device: one SFT update of the 0.5B-shaped model (bf16 weights) on rows
with a realistic spread of lengths, padded micro-batches against packed ones, with every attention
implementation there is: SDPA always, FlexAttention on CUDA (its block mask skips the blocks between
packed rows), flash-attention 2 where ``flash_attn`` is installed (variable-length kernels from the
restarting positions). Each cell's gradient is compared with SDPA's padded one."""

import gc
import importlib.util
import statistics

import torch

import unified_rl as url
from unified_rl.batching import micro_batch_views

from common import Sizes, peak_gib, qwen, rel_error, reset_peak, timed
from packing import batch  # benchmarks/packing.py: its batch of realistic spread


def _implementations(device: str) -> list[str]:
    out = ["sdpa"]
    if device == "cuda":  # FlexAttention has no backward on CPU
        out.append("flex_attention")
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        out.append("flash_attention_2")
    return out


def packing(device: str, s: Sizes) -> dict:
    """Median seconds and peak memory of the update, padded vs packed, per attention implementation;
    the padded-token share of the padded micro-batches; gradients against SDPA padded (pass: within
    ``tol``, bf16 on a GPU, fp32 on CPU)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-4
    model = qwen(s, device, dtype)
    method = url.methods.sft()
    r = method.coefficient.prepare(batch(s.pack_rows, s.pack_completion, model.config.vocab_size)).to(device)
    real = int(r.attention_mask.sum())
    padded = sum(mb.input_ids.numel() for _, _, _, mb in micro_batch_views(r, s.pack_max_tokens, False))
    grads, cells = {}, {}
    for impl in _implementations(device):
        ways = (False, True) if impl == "sdpa" else (True,)  # SDPA padded is the baseline; the others are packing's fast paths
        try:
            model.set_attn_implementation(impl)
            times, peaks = {w: [] for w in ways}, {}

            def step(packed: bool) -> None:
                model.zero_grad(set_to_none=True)
                url.engine.backward(model, r, method.coefficient,
                                    url.ExecutionPlan(max_tokens=s.pack_max_tokens, share_prefix=False, packed=packed))

            for packed in ways:  # warm-up (FlexAttention compiles here); keep each gradient
                step(packed)
                grads[(impl, packed)] = [p.grad.detach().clone() for p in model.parameters()]
            for k in range(s.repeats):
                for packed in (ways if k % 2 == 0 else ways[::-1]):
                    reset_peak(device)
                    times[packed].append(timed(lambda: step(packed), device))
                    peaks[packed] = peak_gib(device)
            cells[impl] = {}
            for packed in ways:
                way = "packed" if packed else "padded"
                cells[impl].update({f"{way}_s": statistics.median(times[packed]), f"{way}_peak_gib": peaks[packed]})
        except Exception as e:  # noqa: BLE001 -- one implementation that fails is a finding; the others still run
            cells[impl] = {"error": f"{type(e).__name__}: {e}"[:500]}
    want = [g.double().cpu() for g in grads[("sdpa", False)]]
    for (impl, packed), g in grads.items():
        cells[impl]["grad_rel_error_" + ("packed" if packed else "padded")] = rel_error(g, want)
    base = cells["sdpa"]["padded_s"]
    for v in cells.values():
        for way in ("padded", "packed"):
            if f"{way}_s" in v:
                v[f"speedup_{way}"] = base / v[f"{way}_s"]
    ok = all("error" not in v and all(e <= tol for k, e in v.items() if k.startswith("grad_rel_error")) for v in cells.values())
    n = sum(p.numel() for p in model.parameters())
    del model, grads
    gc.collect()
    return {"what": f"one SFT update, {n / 1e6:.1f}M parameters, {str(dtype).split('.')[-1]} weights, {s.pack_rows} rows (each its own prompt, "
                    f"completions log-uniform up to {s.pack_completion} tokens), micro-batches of at most {s.pack_max_tokens} padded tokens",
            "real_tokens": real, "padded_tokens": padded, "padded_share": (padded - real) / padded, "tolerance": tol,
            "rows": cells, "pass": ok}
