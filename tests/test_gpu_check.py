"""The GPU check cannot rot: its --dry-run runs every section at tiny sizes on CPU through the real
command, and every section must finish without an error and with its correctness bars met."""

import json
import os
import subprocess
import sys

from unified_rl.methods import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_runs_every_section(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "check.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "check.json").read_text())
    sections = ("methods", "fsdp", "lora", "cuda_tests", "head_memory", "mfu", "packing", "samplers", "grpo_vs_trl")
    for name in sections:
        assert name in results and "error" not in results[name], (name, results.get(name))
    assert [r["method"] for r in results["methods"]["rows"]] == list(REGISTRY)
    assert all(r["fp32"] < 1e-4 for r in results["methods"]["rows"])  # CPU fp32 vs fp64: a real comparison even in a dry run
    packing = results["packing"]["rows"]["sdpa"]  # packed vs padded gradient in fp32 on CPU: a real comparison as well
    assert results["packing"]["pass"] and packing["grad_rel_error_packed"] < 1e-4 and results["packing"]["padded_share"] > 0
    assert results["grpo_vs_trl"]["ours"]["s_per_step"] > 0 and results["grpo_vs_trl"]["trl"]["s_per_step"] > 0
    md = (tmp_path / "check.md").read_text()
    assert "## A GRPO step vs TRL" in md and "**FAIL**" not in md


def test_gpu_check_refuses_an_unknown_section(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "check.py"), "--dry-run", "--only", "mfu,speed",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "unknown section(s) speed" in proc.stderr
