"""torch.distributed on CPU with gloo, world size 2, real spawned processes: for each method, the
gradient of 2 ranks (each with whole groups of the batch and its own micro-batch budget, through
FSDP2 and through DDP) equals the one-process gradient of the union batch (fp64)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import unified_rl as url
from distributed_worker import CASES, WRAPPERS, critic_for, method_for, others_for, union_batch
from helpers import tiny_model

WORLD = 2
WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
KILL_WORKER = os.path.join(os.path.dirname(__file__), "kill_worker.py")


@pytest.fixture(scope="module")
def rank_grads(tmp_path_factory):
    """One torchrun job of 2 real processes (gloo) writes every method's per-rank gradients."""
    out = tmp_path_factory.mktemp("ranks")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--standalone", WORKER, str(out), *sorted(CASES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_give_the_union_batch_gradient(name, wrapper, rank_grads):
    union = union_batch(name)
    method = method_for(name)
    model = tiny_model(0)
    url.engine.backward(model, method.coefficient.prepare(union), method.coefficient, url.ExecutionPlan(), others_for(name))
    ranks = [load_file(rank_grads / f"{name}-{wrapper}-rank{r}.safetensors") for r in range(WORLD)]
    for n, p in model.named_parameters():
        assert torch.equal(ranks[0][n], ranks[1][n]), n  # every rank holds the same summed gradient
        torch.testing.assert_close(ranks[0][n], p.grad, rtol=1e-10, atol=1e-13, msg=lambda m: f"{name}, {wrapper}, {n}: {m}")
    assert any(float(p.grad.abs().max()) > 0 for p in model.parameters())


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_ppo_value_model_gradient_is_the_union_batch_one(wrapper, rank_grads):
    """PPO's value model, sharded by FSDP2 or whole on every rank: its loss has the union normaliser
    and the ranks' gradients are summed, so the ranks take the one-process step."""
    method, critic = method_for("ppo"), critic_for("ppo")
    critic.backward(method.coefficient.prepare(union_batch("ppo")))
    ranks = [load_file(rank_grads / f"ppo-value-{wrapper}-rank{r}.safetensors") for r in range(WORLD)]
    for n, p in critic.model.named_parameters():
        assert torch.equal(ranks[0][n], ranks[1][n]), n
        torch.testing.assert_close(ranks[0][n], p.grad, rtol=1e-10, atol=1e-13, msg=lambda m: f"value model, {n}: {m}")
    assert float(critic.model.head.weight.grad.abs().max()) > 0


def test_normalisers_are_union_batch_ones():
    """Without an initialised process group every global statistic is the local one."""
    from unified_rl import distributed

    x = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    assert distributed.world_size() == 1 and distributed.global_sum(3) == 3 and distributed.global_values(x) is x
    mean, std, n = distributed.global_mean_std(x)
    assert (mean, n) == (float(x.mean()), 3) and std == float(x.std())
    assert os.environ.get("WORLD_SIZE", "1") == "1"


def _torchrun(args, cwd, nproc=WORLD, script=("-m", "unified_rl.apps.cli")):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


COMMON = ["train", "--method", "grpo", "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "8", "--eval-size", "8",
          "--checkpoint-every", "1", "--out", "run", "--no-progress"]


def _ok(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(folder):
    return load_file(os.path.join(folder, "model", "model.safetensors"))


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A 2-step GRPO run of 2 ranks (FSDP2, the default under torchrun), checkpointed each step."""
    where = tmp_path_factory.mktemp("two_steps")
    _ok(_torchrun([*COMMON, "--steps", "2"], where))
    return where / "run"


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_torchrun_trains_writes_once_and_resumes_bitwise(two_steps, tmp_path):
    lines = [json.loads(x) for x in (two_steps / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "reward/mean" in m] == [1, 2]  # rank 0 writes; metrics reduced over ranks
    assert sorted(p.name for p in (two_steps / "checkpoint").iterdir()) == ["manifest.json", "rank0", "rank1", "weights"]
    assert any(p.suffix == ".distcp" for p in (two_steps / "checkpoint" / "weights").iterdir())  # DCP shards
    straight = tmp_path / "straight"
    straight.mkdir()
    _ok(_torchrun([*COMMON, "--steps", "3"], straight))
    run = _copy(two_steps, tmp_path)
    out = _ok(_torchrun([*COMMON, "--steps", "3", "--resume"], tmp_path))
    assert "resumed from" in out.stdout and "at step 2" in out.stdout
    a, b = _weights(run), _weights(straight / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the continuation is bitwise
    assert not all(torch.equal(a[k], _weights(two_steps)[k]) for k in a)  # and step 3 moved the weights
    bad = _torchrun(["train", "--method", "grpo", "--questions-per-step", "3", "--out", "bad", "--no-progress"], tmp_path)
    assert bad.returncode != 0 and "must divide among the 2 ranks" in bad.stderr


def test_a_two_rank_checkpoint_resumes_in_one_process(two_steps, tmp_path):
    """DCP reshards: one plain process loads the 2 ranks' shards; exported again, the weights are
    exactly the ones the 2 ranks exported at that step."""
    run = _copy(two_steps, tmp_path)
    saved = _weights(run)
    one = subprocess.run([sys.executable, "-m", "unified_rl.apps.cli", *COMMON, "--steps", "2", "--resume"], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    assert "at step 2" in one.stdout and "written by 2 rank(s), resumed by 1" in one.stderr
    again = _weights(run)
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    more = subprocess.run([sys.executable, "-m", "unified_rl.apps.cli", *COMMON, "--steps", "3", "--resume"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert more.returncode == 0 and "at step 2" in more.stdout, more.stderr[-3000:]  # and trains on (optimizer state included)


def _one_process(args, cwd):
    return subprocess.run([sys.executable, "-m", "unified_rl.apps.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_resume_never_goes_back_to_an_older_checkpoint(two_steps, tmp_path):
    """2 ranks to step 2, one process on to step 3 (a one-process checkpoint; the sharded one becomes
    .prev): torchrun --resume is then refused with both world sizes named, and rewrites nothing; one
    process resumes the newest (step 3) and continues."""
    run = _copy(two_steps, tmp_path)
    _ok(_one_process([*COMMON, "--steps", "3", "--resume"], tmp_path))
    metrics = (run / "metrics.jsonl").read_text()
    assert (run / "checkpoint" / "state.json").exists() and (run / "checkpoint.prev" / "manifest.json").exists()
    refused = _torchrun([*COMMON, "--steps", "4", "--resume"], tmp_path)
    assert refused.returncode != 0
    said = [line for line in refused.stderr.splitlines() if line.startswith("unified-rl train: error:")]
    assert said and "saved by 1 process" in said[0] and "resumed by 2 ranks" in said[0] and "without torchrun" in said[0], refused.stderr[-2000:]
    assert (run / "metrics.jsonl").read_text() == metrics and (run / "checkpoint" / "state.json").exists()
    more = _ok(_one_process([*COMMON, "--steps", "4", "--resume"], tmp_path))
    assert "at step 3" in more.stdout
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "reward/mean" in x]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("victim,where", [(1, "shards"), (0, "rename")])
def test_a_rank_killed_mid_save_leaves_the_last_checkpoint(two_steps, tmp_path, victim, where):
    from unified_rl.sharded_checkpoint import read_manifest

    run = _copy(two_steps, tmp_path)
    killed = _torchrun([*COMMON, "--steps", "4", "--resume"], tmp_path, script=(KILL_WORKER, str(victim), "1", where, "--"))
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr + killed.stdout
    found, manifest = read_manifest(str(run / "checkpoint"))
    assert manifest["meta"]["step"] == 2 and found.endswith("checkpoint" if where == "shards" else "checkpoint.prev")
    out = _ok(_torchrun([*COMMON, "--steps", "3", "--resume"], tmp_path, script=(KILL_WORKER, "-1", "0", "none", "--")))
    assert "at step 2" in out.stdout


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _reseal(folder):
    """Recompute a sharded checkpoint's manifest after a change (as someone crafting a folder could)."""
    import hashlib

    from unified_rl.sharded_checkpoint import _file_digests

    doc = json.loads((folder / "manifest.json").read_text())
    doc.pop("sha256")
    doc["files"] = {k: v for k, v in _file_digests(str(folder)).items() if k != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps({**doc, "sha256": hashlib.sha256(json.dumps(doc).encode()).hexdigest()}))


def _fault(kind, folder, marker):
    """Damage one sharded checkpoint folder; returns what the warning must say."""
    shard, meta = folder / "weights" / "__1_0.distcp", folder / "weights" / ".metadata"
    if kind == "flipped byte in a shard":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))
        return "does not match its checksum"
    if kind == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:100])
        return "does not match its checksum"
    if kind == "a rank's state missing":
        (folder / "rank1" / "state.json").unlink()
        return "is missing"
    if kind == "a shard linked to /dev/zero":
        shard.unlink()
        shard.symlink_to("/dev/zero")
        return "not a plain file"
    import pickle

    meta.write_bytes(pickle.dumps(_Payload(marker)))  # crafted, with a manifest that agrees
    _reseal(folder)
    return "not DCP's metadata"


@pytest.mark.parametrize("kind", ["flipped byte in a shard", "truncated shard", "a rank's state missing", "a shard linked to /dev/zero",
                                  "crafted metadata"])
def test_a_damaged_sharded_checkpoint_is_refused_before_anything_loads(two_steps, tmp_path, kind):
    """Damage in the newest sharded checkpoint: the resume says so and continues from the previous
    one; damage in both: one line, nothing trained; a crafted metadata pickle never runs."""
    run = _copy(two_steps, tmp_path)
    marker = tmp_path / "payload-ran"
    said = _fault(kind, run / "checkpoint", marker)
    back = _one_process([*COMMON, "--steps", "2", "--resume"], tmp_path)
    assert back.returncode == 0 and "at step 1" in back.stdout, back.stderr[-2000:]
    assert said in back.stderr and "resuming from the previous checkpoint" in back.stderr
    run2 = tmp_path / "again"
    shutil.copytree(two_steps, run2 / "run")
    _fault(kind, run2 / "run" / "checkpoint", marker)
    _fault(kind, run2 / "run" / "checkpoint.prev", marker)
    refused = _one_process([*COMMON, "--steps", "3", "--resume"], run2)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("unified-rl train: error:")]
    assert refused.returncode == 2 and errors and said in errors[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and not marker.exists()


def test_one_process_then_two_ranks_then_one_process(tmp_path):
    """1 -> 2 -> 1: a one-process checkpoint is refused by 2 ranks (both world sizes and the command
    that can resume it named, nothing written), and one process then resumes it bitwise: its step 3
    equals a straight 3-step run's."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _ok(_one_process([*COMMON, "--steps", "2"], a))
    metrics = (a / "run" / "metrics.jsonl").read_text()
    refused = _torchrun([*COMMON, "--steps", "3", "--resume"], a)
    said = [line for line in refused.stderr.splitlines() if line.startswith("unified-rl train: error:")]
    assert refused.returncode != 0 and said and "saved by 1 process" in said[0] and "resumed by 2 ranks" in said[0], refused.stderr[-2000:]
    assert (a / "run" / "metrics.jsonl").read_text() == metrics
    assert "at step 2" in _ok(_one_process([*COMMON, "--steps", "3", "--resume"], a)).stdout
    _ok(_one_process([*COMMON, "--steps", "3"], b))
    resumed, straight = _weights(a / "run"), _weights(b / "run")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_torchrun_with_ddp(tmp_path):
    args = [*COMMON, "--parallel", "ddp", "--steps", "1"]
    _ok(_torchrun(args, tmp_path))
    assert (tmp_path / "run" / "checkpoint" / "manifest.json").exists()
    out = _ok(_torchrun([*args[:-1], "2", "--resume"], tmp_path))
    assert "at step 1" in out.stdout


def test_torchrun_with_a_rollout_worker_per_rank(tmp_path):
    """--async-staleness under torchrun (DDP): each rank's own worker samples its groups, the step's
    staleness is reduced over the ranks and stays within K; FSDP2 is refused with one line."""
    import json

    _ok(_torchrun([*COMMON, "--parallel", "ddp", "--steps", "4", "--async-staleness", "1"], tmp_path))
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"async/staleness"' in line]
    assert len(steps) == 4 and all(0 <= m["async/staleness"] <= 1 for m in steps) and max(m["async/staleness"] for m in steps) > 0
    refused = _torchrun([*COMMON[:-3], "--out", "run2", "--steps", "1", "--async-staleness", "1"], tmp_path)
    assert refused.returncode != 0 and "use --parallel ddp" in refused.stderr


def test_torchrun_trains_on_episodes(tmp_path):
    """--env under torchrun (FSDP2): each rank plays whole groups of episodes with its own environments,
    the step's environment metrics are reduced over the ranks, and the run checkpoints."""
    import json
    import shutil

    shutil.copy(os.path.join(os.path.dirname(__file__), "fixtures", "cli_envs.py"), tmp_path / "cli_envs.py")
    _ok(_torchrun([*COMMON[:-1], "--env", "cli_envs:Checker", "--max-turns", "2", "--steps", "1"], tmp_path))
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"env/turns"' in line]
    assert len(steps) == 1 and steps[0]["env/errors"] == 0 and 1 <= steps[0]["env/turns"] <= 2
    assert (tmp_path / "run" / "checkpoint" / "manifest.json").exists()


def test_torchrun_trains_ppo(tmp_path):
    """PPO under FSDP2: the value model is sharded and trained like the policy, checkpointed through
    DCP (not in the ranks' own state), resumed on 2 ranks and resharded into one process."""
    from safetensors import safe_open

    args = [*COMMON[:2], "ppo", *COMMON[3:5], *COMMON[7:], "--steps", "1"]  # PPO draws one sample per question: no --group-size
    _ok(_torchrun(args, tmp_path))
    out = _ok(_torchrun([*args[:-1], "2", "--resume"], tmp_path))
    assert "at step 1" in out.stdout
    checkpoint = tmp_path / "run" / "checkpoint"
    for part in ("rank0", "rank1"):
        for f in (checkpoint / part).glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                assert not [k for k in st.keys() if "value_model" in k or "critic" in k], f
    one = subprocess.run([sys.executable, "-m", "unified_rl.apps.cli", *args[:-1], "3", "--resume"], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0 and "at step 2" in one.stdout, one.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "value/loss" in m] == [1, 2, 3]


def test_clear_errors_before_anything_starts(monkeypatch, tmp_path, capsys):
    from unified_rl.apps import cli

    monkeypatch.chdir(tmp_path)
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's world size, without the rest of its environment
    assert cli.main(COMMON) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment" in err and "torchrun" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    if not torch.cuda.is_available():
        for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "1")):
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match="nccl needs CUDA"):
            url.hf.init_process_group("nccl")
    with pytest.raises(RuntimeError, match="not initialised"):
        url.hf.fsdp(tiny_model(0))


def test_a_model_without_layer_classes_cannot_be_sharded():
    model = tiny_model(0)
    for m in model.modules():  # the causal LM and its trunk (both transformers models) name none
        m._no_split_modules = None
    with pytest.raises(ValueError, match="names no decoder layer class"):
        url.hf.decoder_layers(model)
    assert len(url.hf.decoder_layers(tiny_model(0))) == 2
    value = url.hf.value_model_from_policy(tiny_model(0))  # PPO's value model: its trunk names them
    assert len(url.hf.decoder_layers(value)) == 2


def test_torchrun_distils_from_a_teacher(tmp_path):
    """gkd (a term over the vocabulary, run inside the FSDP2 wrapper's forward, the teacher sharded and
    gathered for the pass) and opd (the sampled reverse KL, its teacher pass gathered) train through
    the real command on 2 ranks (the DDP path of the pass: the union-batch gradient tests above)."""
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import save_model, tiny_llama

    tok = char_tokenizer()
    save_model(tiny_llama(len(tok), seed=5), tok, str(tmp_path / "teacher"))
    for method, parallel in (("gkd", "fsdp"), ("opd", "fsdp")):
        args = ["train", "--method", method, "--teacher", str(tmp_path / "teacher"), "--parallel", parallel, "--steps", "1",
                "--questions-per-step", "2", "--max-new-tokens", "48", "--eval-size", "4", "--out", method, "--no-progress"]
        if method == "opd":
            args += ["--group-size", "2"]
        _ok(_torchrun(args, tmp_path))
        step = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines() if '"loss"' in x][0]
        assert step["phase"] == method and ("distill/teacher_kl" if method == "opd" else "distill/mean") in step
