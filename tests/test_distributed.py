"""torch.distributed on CPU with gloo, world size 2, real spawned processes: for each method, the
gradient of 2 ranks (each with whole groups of the batch and its own micro-batch budget, through
the DDP wrapper) equals the one-process gradient of the union batch (fp64)."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import unified_rl as url
from distributed_worker import CASES, method_for, union_batch
from helpers import tiny_model

WORLD = 2
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")


@pytest.fixture(scope="module")
def rank_grads(tmp_path_factory):
    """One torchrun job of 2 real processes (gloo) writes every method's per-rank gradients."""
    out = tmp_path_factory.mktemp("ranks")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--standalone", WORKER, str(out), *sorted(CASES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_give_the_union_batch_gradient(name, rank_grads):
    union = union_batch(name)
    method = method_for(name)
    model = tiny_model(0)
    url.engine.backward(model, method.coefficient.prepare(union), method.coefficient, url.ExecutionPlan())
    ranks = [load_file(rank_grads / f"{name}-rank{r}.safetensors") for r in range(WORLD)]
    for n, p in model.named_parameters():
        assert torch.equal(ranks[0][n], ranks[1][n]), n  # every rank holds the same summed gradient
        torch.testing.assert_close(ranks[0][n], p.grad, rtol=1e-10, atol=1e-13, msg=lambda m: f"{name}, {n}: {m}")
    assert any(float(p.grad.abs().max()) > 0 for p in model.parameters())


def test_normalisers_are_union_batch_ones():
    """Without an initialised process group every global statistic is the local one."""
    from unified_rl import distributed

    x = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    assert distributed.world_size() == 1 and distributed.global_sum(3) == 3 and distributed.global_values(x) is x
    mean, std, n = distributed.global_mean_std(x)
    assert (mean, n) == (float(x.mean()), 3) and std == float(x.std())
    assert os.environ.get("WORLD_SIZE", "1") == "1"


def _torchrun(args, tmp_path, nproc=WORLD):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "unified_rl.apps.cli",
           "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_torchrun_trains_resumes_and_writes_once(tmp_path):
    import json

    common = ["--method", "grpo", "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "8", "--eval-size", "8",
              "--checkpoint-every", "1", "--out", "run", "--no-progress"]
    out = _torchrun([*common, "--steps", "2"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "reward/mean" in m] == [1, 2]  # rank 0 writes; metrics reduced over ranks
    assert (tmp_path / "run" / "checkpoint").is_dir() and (tmp_path / "run" / "checkpoint-rank1").is_dir()
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    out = _torchrun([*common, "--steps", "3", "--resume"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout and "at step 2" in out.stdout
    bad = _torchrun(["--method", "grpo", "--questions-per-step", "3", "--out", "bad", "--no-progress"], tmp_path)
    assert bad.returncode != 0 and "must divide among the 2 ranks" in bad.stderr
