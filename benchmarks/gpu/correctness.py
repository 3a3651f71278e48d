"""Correctness on the device: every registered method's engine gradient (fp32, bf16 autocast, bf16
weights) against the CPU's fp64 gradient on the same batch; FSDP2 on one device against the plain
model; LoRA; the CUDA-marked tests of the suite."""

import copy
import os
import re
import socket
import subprocess
import sys

import torch

import unified_rl as url
from unified_rl.methods import REGISTRY, build

from common import method_batch, rel_error, small_qwen

# Relative L2 error of the whole parameter gradient against CPU fp64 that counts as a pass.
TOLERANCE = {"fp32": 1e-4, "bf16 autocast": 1e-1, "bf16 weights": 1e-1}
PRECISION = {"fp32": "fp32", "bf16 autocast": "bf16", "bf16 weights": "fp32"}
VOCAB = 512


def _grads(model) -> list[torch.Tensor]:
    out = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out.append(g.full_tensor() if hasattr(g, "full_tensor") else g)
    return out


def methods(device: str) -> dict:
    """Every registered method: gradient on ``device`` at three precisions vs CPU fp64."""
    model64 = small_qwen(VOCAB)
    batch = method_batch(model64, VOCAB, seed=0)
    rows = []
    for name in REGISTRY:
        method = build(name, max_new_tokens=48, **({"group_size": 2} if REGISTRY[name].parameter("group_size") else {}))
        critic = method.critic.build(copy.deepcopy(model64)) if method.critic is not None else None  # PPO (fp64; prepare only)
        prepared = method.coefficient.prepare(batch.replace(values=critic.values(batch)) if critic is not None else batch)
        reads = url.coefficients.reads_of(method.coefficient.vocabulary)
        teacher = small_qwen(VOCAB, seed=1) if "teacher" in reads else None  # distillation: another model of the same shape
        model64.zero_grad(set_to_none=True)
        url.engine.backward(model64, prepared, method.coefficient, models={"teacher": teacher} if teacher is not None else None)
        want = _grads(model64)
        on_device = prepared.to(device)
        row = {"method": name}
        for variant in TOLERANCE:
            dtype = torch.bfloat16 if variant == "bf16 weights" else torch.float32
            m = copy.deepcopy(model64).to(device=device, dtype=dtype)
            m.zero_grad(set_to_none=True)
            others = {"teacher": copy.deepcopy(teacher).to(device=device, dtype=dtype)} if teacher is not None else None
            url.engine.backward(m, on_device, method.coefficient, url.ExecutionPlan(precision=PRECISION[variant]), models=others)
            row[variant] = rel_error(_grads(m), want)
        row["pass"] = all(row[v] <= tol for v, tol in TOLERANCE.items())
        rows.append(row)
    return {"rows": rows, "tolerance": TOLERANCE, "pass": all(r["pass"] for r in rows),
            "batch": f"{batch.batch_size} rows (4 pairs), {batch.num_completion_tokens} completion tokens, Qwen2 2 layers width 128 vocab {VOCAB}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp(device: str) -> dict:
    """FSDP2 over one rank (nccl on CUDA, gloo on CPU): the sharded engine gradient vs the plain model's."""
    from unified_rl.hf import distributed as hfd

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                      LOCAL_WORLD_SIZE="1")
    hfd.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        model64 = small_qwen(VOCAB)
        method = url.methods.grpo(beta=0.04, group_size=2)
        prepared = method.coefficient.prepare(method_batch(model64, VOCAB, seed=1))
        plain = copy.deepcopy(model64).to(device=device, dtype=torch.float32)
        url.engine.backward(plain, prepared.to(device), method.coefficient)
        want = [g.double().cpu() for g in _grads(plain)]
        sharded = copy.deepcopy(model64).to(device=device, dtype=torch.float32)
        wrapped = hfd.fsdp(sharded)
        url.engine.backward(wrapped, prepared.to(device), method.coefficient)
        err = rel_error(_grads(sharded), want)
        del wrapped
    finally:
        hfd.leave_process_group()
    return {"rel_error_vs_plain": err, "pass": err <= 1e-5, "backend": "nccl" if device == "cuda" else "gloo"}


def lora(device: str) -> dict:
    """LoRA (peft, r = 8, every linear layer, B initialised at random so A's gradient is not 0): the
    adapters' gradient on ``device`` in fp32 vs CPU fp64."""
    from unified_rl.hf import add_lora

    model64 = add_lora(small_qwen(VOCAB), r=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model64.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    method = url.methods.grpo(beta=0.04, group_size=2)
    prepared = method.coefficient.prepare(method_batch(model64, VOCAB, seed=2))
    url.engine.backward(model64, prepared, method.coefficient)
    want = _grads(model64)
    m = copy.deepcopy(model64).to(device=device, dtype=torch.float32)
    m.zero_grad(set_to_none=True)
    url.engine.backward(m, prepared.to(device), method.coefficient)
    err = rel_error(_grads(m), want)
    return {"rel_error": err, "adapter_tensors": len(want), "pass": err <= TOLERANCE["fp32"]}


def cuda_tests(root: str) -> dict:
    """The suite's tests marked ``cuda`` (skipped without a device), run by pytest."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_logprobs.py",
                           "tests/test_fast_decode.py"],
                          cwd=root, capture_output=True, text=True, timeout=180)
    tail = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)][-1:] or [
        (proc.stdout + proc.stderr).strip()[-300:]]
    return {"returncode": proc.returncode, "summary": tail[0], "pass": proc.returncode == 0}
