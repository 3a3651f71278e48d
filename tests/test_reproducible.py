"""Two runs with the same flags are bitwise equal: in one process (every kind of method, with and
without LoRA) and in two processes, with the command line's own thread count (no OMP_NUM_THREADS)."""

import glob
import json
import os

import pytest
from safetensors.torch import load_file

from helpers import run_cli
from unified_rl.apps.cli import main

FLAGS = ["--questions-per-step", "4", "--max-new-tokens", "40", "--steps", "2", "--eval-size", "4", "--checkpoint-every", "0",
         "--no-progress", "--seed", "0"]


def _group(method):
    """``--group-size 4`` where the method samples several per question (SFT and PPO take none)."""
    from unified_rl.names import METHODS

    return ["--group-size", "4"] if METHODS[method].parameter("group_size") else []


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """The benchmarks' shipped SFT start (it earns rewards, so every method's gradient is non-zero)."""
    from safetensors.torch import load_file as load

    from unified_rl.apps.demo import BENCHMARK_START
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.hf import save_model, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(len(tok), seed=0)
    model.load_state_dict(load(BENCHMARK_START), strict=True)
    return save_model(model, tok, str(tmp_path_factory.mktemp("start")))


def _outputs(out):
    """Every tensor the run wrote, and its metrics without timings."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(out, "**", "*.safetensors"), recursive=True)):
        for k, v in load_file(path).items():
            tensors[f"{os.path.relpath(path, out)}:{k}"] = v
    with open(os.path.join(out, "metrics.jsonl")) as f:
        metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith("time/") and k != "tokens_per_s"} for line in f]
    return tensors, metrics


def _same(a, b):
    (ta, ma), (tb, mb) = a, b
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and bool((ta[k] == tb[k]).all()), k
    assert ma == mb


def _two_processes(args, tmp_path):
    """The same command twice, each in its own process, threads as the command line sets them."""
    env_threads = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        runs = []
        for out in ("a", "b"):
            done = run_cli([*args, "--out", out], tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            runs.append(_outputs(str(tmp_path / out)))
    finally:
        if env_threads is not None:
            os.environ["OMP_NUM_THREADS"] = env_threads
    return runs


# Every method, with and without LoRA, is reproduced across processes by
# test_every_method_is_bitwise_reproducible_in_one_process_and_in_two; through
# the command (checkpoints, metrics file, the command's own thread count) one of each kind of data:
# sampled groups with LoRA adapters, PPO with its critic, DPO's ranked pairs.
@pytest.mark.slow
@pytest.mark.parametrize("method,lora", [("grpo", True), ("ppo", False), ("dpo", False)], ids=["grpo-lora", "ppo-full", "dpo-full"])
def test_two_runs_in_two_processes_are_bitwise_equal(method, lora, start, tmp_path):
    runs = _two_processes(["train", "--method", method, "--model", start, *FLAGS, *_group(method), *(["--lora-r", "4"] if lora else [])],
                          tmp_path)
    assert all(m["grad_norm"] > 0 for m in runs[0][1] if "grad_norm" in m)  # real updates, not zeros compared
    _same(*runs)


def test_two_runs_in_one_process_are_bitwise_equal(start, tmp_path, monkeypatch):
    """GRPO + LoRA twice through ``main`` in one process: the adapters' initialisation, the sampling
    and the data order come from the run's seed, not from whatever the global RNG holds."""
    import torch

    monkeypatch.chdir(tmp_path)
    runs = []
    for out in ("a", "b"):
        assert main(["train", "--method", "grpo", "--model", start, *FLAGS, *_group("grpo"), "--steps", "1", "--lora-r", "4", "--out", out]) == 0
        runs.append(_outputs(str(tmp_path / out)))
        torch.rand(7)  # the global RNG moves between the runs
    assert runs[0][1][0]["grad_norm"] > 0
    _same(*runs)


def test_every_method_is_bitwise_reproducible_in_one_process_and_in_two():
    """Every registered method, with and without LoRA: two Trainers built with the same seed in one
    process (the global RNG moved between them) take bitwise the same first update, and two
    processes give the same digests: adapters, PPO's critic, data order and sampling all come from
    the run's seed."""
    import subprocess
    import sys

    worker = os.path.join(os.path.dirname(__file__), "reproduce_worker.py")
    procs = [subprocess.Popen([sys.executable, worker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]  # the two processes run side by side
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    from unified_rl.names import METHODS

    assert len(first) == 2 * len(METHODS) and first == second  # every method, full and LoRA


def test_grpo_at_the_demo_s_size_is_bitwise_reproducible_with_threads():
    """Two GRPO Trainers from the shipped SFT start (16 questions x G = 8, 48 new tokens), with the
    CPU threads the tests run with: the same weights to the bit after 2 updates. The rows that share
    a prompt sum their gradients into it in a fixed order (before, indexing's backward summed them in
    an order that varied with the threads: the runs differed by about 1e-7 from the second update)."""
    import torch

    was = torch.get_num_threads()  # an earlier in-process command may have fitted torch's threads to a busy machine
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        digests = _two_demo_sized_runs()
    finally:
        torch.set_num_threads(was)
    assert digests[0] == digests[1]


def _two_demo_sized_runs() -> list:
    import hashlib

    from safetensors.torch import load_file as load

    import unified_rl as url
    from unified_rl.apps.demo import BENCHMARK_START
    from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer, task_reward
    from unified_rl.config import TrainConfig
    from unified_rl.hf import tiny_llama
    from unified_rl.loop import Trainer

    tok, digests = char_tokenizer(), []
    for _ in range(2):
        model = tiny_llama(len(tok), seed=0)
        model.load_state_dict(load(BENCHMARK_START))
        method = url.methods.grpo(beta=0.04, epsilon=0.2, group_size=8)
        cfg = TrainConfig(steps=2, questions_per_step=16, lr=1e-4, max_new_tokens=48, checkpoint_every=0)
        trainer = Trainer(model, tok, method, ArithmeticTask().train_rows(200), cfg, reward=task_reward(method, tok))
        trainer.run(progress=False)
        h = hashlib.sha256()
        for _, v in sorted(model.state_dict().items()):
            h.update(v.numpy().tobytes())
        digests.append(h.hexdigest())
    return digests
