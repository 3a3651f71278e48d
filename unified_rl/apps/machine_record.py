"""What a result was measured on: the CPU model, the machine and library versions, file digests."""

import hashlib
import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux; else what ``platform`` knows)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


ISA_FLAGS = ("sse4_2", "fma", "avx", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


def cpu_isa() -> dict:
    """The vector instruction sets that change floating-point results and speed: the ones the CPU
    reports (``/proc/cpuinfo`` flags, of :data:`ISA_FLAGS`) and the one torch dispatches its kernels to."""
    flags: list = []
    try:
        with open("/proc/cpuinfo") as f:
            line = next((x for x in f if x.startswith(("flags", "Features"))), "")
        have = set(line.split(":", 1)[1].split()) if ":" in line else set()
        flags = [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return {"cpu_flags": flags, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def code_commit() -> "str | None":
    """The git commit of the checkout this package runs from (with ``+changes`` when files differ
    from it); None outside a git checkout."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def environment() -> dict:
    """The machine (CPU model, its vector instruction sets, threads), library versions and code commit
    a result was measured with."""
    import transformers

    return {"cpu": cpu_model(), **cpu_isa(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "commit": code_commit()}


def measured_on(env: dict, seconds: float) -> str:
    """The closing line of a results table: the machine, versions and wall-clock seconds."""
    return (f"measured on {env['cpu']} ({env['cpus']} CPUs, {env['torch_threads']} torch threads), torch {env['torch']}, "
            f"transformers {env['transformers']}, Python {env['python']}; {seconds:.0f} s")


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
