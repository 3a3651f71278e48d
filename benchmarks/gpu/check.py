"""The GPU check: one command, on one GPU, writes ``check.json`` and ``check.md`` (the GPU, driver and
library versions; correctness of every method's gradient on the device; FSDP2, LoRA and the CUDA
tests; the loss head's memory; the update's MFU; padded vs packed training; the samplers; a GRPO step
vs TRL's GRPOTrainer).

    python benchmarks/gpu/check.py --out runs/gpu-check          # on a GPU (about 5 minutes on an H200)
    python benchmarks/gpu/check.py --dry-run --out /tmp/check    # every path at tiny sizes on CPU (tests)
    python benchmarks/gpu/check.py --only methods,fsdp           # a subset of the sections

Each section is timed and runs on its own: one that fails records its error and the rest still
run. The results files are rewritten after every section, so a run cut short keeps what it did.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import torch  # noqa: E402

import correctness  # noqa: E402
import packed  # noqa: E402
import speed  # noqa: E402
from common import DRY, FULL  # noqa: E402
from report import markdown  # noqa: E402

SECTIONS = ("methods", "fsdp", "lora", "cuda_tests", "head_memory", "mfu", "packing", "samplers", "grpo_vs_trl")


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "trl", "vllm", "peft", "datasets", "unified_rl"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(device: str) -> dict:
    from _machine import machine

    env = {"machine": machine(), "device": device, "versions": versions()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}")
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=30)
            env["driver"] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["driver"] = f"nvidia-smi failed: {e}"
    return env


def run_section(name: str, device: str, sizes, profile_to: str = "") -> dict:
    calls = {"methods": lambda: correctness.methods(device), "fsdp": lambda: correctness.fsdp(device),
             "lora": lambda: correctness.lora(device), "cuda_tests": lambda: correctness.cuda_tests(ROOT),
             "head_memory": lambda: speed.head_memory(device, sizes), "mfu": lambda: speed.mfu(device, sizes, profile_to),
             "packing": lambda: packed.packing(device, sizes),
             "samplers": lambda: speed.samplers(device, sizes), "grpo_vs_trl": lambda: speed.grpo_vs_trl(device, sizes)}
    t = time.perf_counter()
    try:
        out = calls[name]()
    except Exception as e:  # noqa: BLE001 -- a failed section is a finding: record it, run the others
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
        print(out["traceback"], file=sys.stderr, flush=True)
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: every path runs, no number means anything")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu-check"), help="folder for check.json and check.md")
    ap.add_argument("--only", default="", help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    ap.add_argument("--quick", action="store_true", help="one GRPO-vs-TRL round and two timed repeats (a short lease)")
    ap.add_argument("--profile", action="store_true", help="write torch.profiler's kernel tables of the updates to profile.txt")
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    device = "cpu" if a.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here; --dry-run runs every path on CPU at tiny sizes")
    sizes = DRY if a.dry_run else FULL
    if a.quick:
        sizes = dataclasses.replace(sizes, grpo_rounds=1, repeats=min(2, sizes.repeats))
    os.makedirs(a.out, exist_ok=True)
    results = {"environment": environment(device), "dry_run": a.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    failed = []
    for name in only:
        print(f"== {name}", flush=True)
        results[name] = run_section(name, device, sizes, os.path.join(a.out, "profile.txt") if a.profile else "")
        if "error" in results[name] or results[name].get("pass") is False:
            failed.append(name)
        print(json.dumps(results[name], default=str)[:2000], flush=True)
        with open(os.path.join(a.out, "check.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(os.path.join(a.out, "check.md"), "w") as f:
            f.write(markdown(results))
    print(markdown(results))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
