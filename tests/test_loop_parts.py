"""The loop's parts: a MetricLogger of the user's own receives exactly what the Trainer records, a
logger that lacks a method is refused when the Trainer is built, and the Checkpointer round-trips."""

import pytest
import torch

import unified_rl as url
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer, task_reward
from unified_rl.config import TrainConfig
from unified_rl.hf import tiny_llama
from unified_rl.loop import Trainer
from unified_rl.metric_logger import MetricLogger, RunLogger

TOK = char_tokenizer()
ROWS = ArithmeticTask().train_rows(16)


class Keep:
    def __init__(self):
        self.metrics, self.rows, self.closed = [], [], 0

    def log(self, metrics, step):
        self.metrics.append((step, metrics))

    def completions(self, rows, step):
        self.rows.append((step, list(rows)))

    def close(self):
        self.closed += 1


def _trainer(logger=None, **kw):
    method = url.methods.grpo(group_size=2)
    cfg = TrainConfig(steps=3, questions_per_step=2, max_new_tokens=6, log_completions_every=2, checkpoint_every=0, **kw)
    return Trainer(tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64), TOK, method, ROWS, cfg,
                   reward=task_reward(method, TOK), logger=logger)


def test_a_custom_logger_receives_every_step_and_the_completions():
    keep = Keep()
    history = _trainer(keep).run(progress=False)
    assert [s for s, _ in keep.metrics] == [1, 2, 3]
    assert [m for _, m in keep.metrics] == history
    assert [s for s, _ in keep.rows] == [2] and len(keep.rows[0][1]) == 4
    assert set(keep.rows[0][1][0]) == {"phase", "step", "prompt", "completion", "reward"}
    assert keep.closed == 1


def test_a_logger_without_close_is_refused_before_training():
    class NoClose:
        def log(self, metrics, step):
            pass

        def completions(self, rows, step):
            pass

    with pytest.raises(TypeError, match="logger"):
        _trainer(NoClose())


def test_the_default_logger_is_a_metric_logger_and_writes_the_run_files(tmp_path):
    trainer = _trainer(out_dir=str(tmp_path))
    assert isinstance(trainer.logger, RunLogger) and isinstance(trainer.logger, MetricLogger)
    trainer.run(progress=False)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "completions.jsonl").read_text().splitlines()) == 4


def test_the_checkpointer_round_trips_a_trainer_bitwise(tmp_path):
    a = _trainer()
    a.train_step()
    a.save(str(tmp_path / "ck"))
    b = _trainer()
    b.resume(str(tmp_path / "ck"))
    assert b.step_count == 1
    for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters()):
        assert torch.equal(p, q), n
    ma, mb = a.train_step(), b.train_step()
    assert ma["loss"] == mb["loss"] and ma["grad_norm"] == mb["grad_norm"]


def test_the_run_seed_decides_the_lora_initialisation():
    """Two Trainers of seed 0 give the same adapters whatever the global RNG held; seed 1 others."""
    pytest.importorskip("peft")

    def lora_a(seed, noise):
        torch.manual_seed(noise)  # the caller's RNG state must not matter
        t = _trainer(lora_r=4, seed=seed)
        return torch.cat([p.detach().flatten() for n, p in t.policy.named_parameters() if "lora_A" in n])

    a, b, c = lora_a(0, 1), lora_a(0, 2), lora_a(1, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_library_leaves_the_thread_count_alone():
    """Importing the package and running a Python-built Trainer change no thread count (the app fits them)."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(7); import unified_rl, unified_rl.rollout, unified_rl.loop; "
            "assert torch.get_num_threads() == 7, torch.get_num_threads()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    before = torch.get_num_threads()
    m = _trainer().train_step()
    assert torch.get_num_threads() == before and m["threads"] == before


def test_one_method_object_starts_two_runs_that_share_nothing():
    """PPO's critic belongs to the run: a second Trainer built from the same ``methods.ppo()`` object
    starts from exactly what a fresh object gives, and the Method itself is left untouched."""
    def ppo_trainer(method):
        cfg = TrainConfig(steps=1, questions_per_step=2, max_new_tokens=6, checkpoint_every=0, seed=3)
        return Trainer(tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64), TOK, method, ROWS, cfg,
                       reward=task_reward(method, TOK))

    def critic(trainer):
        return {k: v.clone() for k, v in trainer.critic.model.state_dict().items()}

    shared = url.methods.ppo()
    first = ppo_trainer(shared)
    first.run(progress=False)
    second, fresh = ppo_trainer(shared), ppo_trainer(url.methods.ppo())
    assert shared.critic.model is None and not hasattr(shared.coefficient.pieces[0], "value_model")  # the Method holds no run's state
    trained, a, b = critic(first), critic(second), critic(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], trained[k]) for k in a)  # the first run did train its own critic
    second.run(progress=False)
    fresh.run(progress=False)
    assert all(torch.equal(critic(second)[k], critic(fresh)[k]) for k in a)


def test_a_resume_moves_later_lines_aside_and_loses_none(tmp_path):
    """Resumed at step 2: the phase's later metrics and completions move to the .superseded files;
    other phases' lines and earlier steps stay; nothing is lost."""
    import json

    from unified_rl.metric_logger import rewind

    metrics = [{"phase": "sft", "step": 5}] + [{"phase": "grpo", "step": s, "loss": s / 10} for s in (1, 2, 3, 4)]
    rows = [{"phase": "grpo", "step": s, "completion": str(s)} for s in (2, 4)]
    for name, lines in (("metrics.jsonl", metrics), ("completions.jsonl", rows)):
        (tmp_path / name).write_text("".join(json.dumps(m) + "\n" for m in lines))
    kept = rewind(str(tmp_path), "grpo", 2)
    assert [m["step"] for m in kept] == [1, 2]

    def read(name):
        return [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]

    assert read("metrics.jsonl") == metrics[:3] and read("metrics.superseded.jsonl") == metrics[3:]
    assert read("completions.jsonl") == rows[:1] and read("completions.superseded.jsonl") == rows[1:]


def test_a_run_shorter_than_checkpoint_every_ends_resumable(tmp_path):
    """The last step is checkpointed whatever checkpoint_every says, through the real command: a
    2-step run (checkpoints every 50 by default) continues to step 3 with --resume."""
    from helpers import run_cli

    flags = ["train", "--method", "grpo", "--questions-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--eval-size", "2",
             "--no-progress", "--out", "run"]
    first = run_cli([*flags, "--steps", "2"], tmp_path)
    assert first.returncode == 0 and (tmp_path / "run" / "checkpoint" / "state.json").exists(), first.stderr[-2000:]
    more = run_cli([*flags, "--steps", "3", "--resume"], tmp_path)
    assert more.returncode == 0 and "at step 2" in more.stdout, more.stderr[-2000:]


def test_a_producer_of_one_s_own_feeds_the_loop_and_its_state_is_checkpointed():
    """``Trainer(producer=...)``: every rollout comes from the user's RolloutProducer (here one that
    replays fixed rows under its own cursor, the shape a multi-turn or asynchronous producer has),
    its metrics reach the step's, and its state is what a checkpoint keeps and restores."""
    from unified_rl.producer import RolloutProducer

    class Replay:
        def __init__(self, trainer):
            self.encoder, self.cursor = trainer.encoder, 0

        def produce(self, n):
            from unified_rl.data.collate import to_rollout
            from unified_rl.rollout import Sample

            rows = [ROWS[(self.cursor + i) % len(ROWS)] for i in range(n)]
            self.cursor += n
            return to_rollout([self.encoder.prompt(r) for r in rows], [self.encoder.completion(r["completion"]) for r in rows],
                              pad_id=TOK.pad_token_id, texts=[Sample(r["prompt"], r["completion"], r) for r in rows])

        def metrics(self):
            return {"replay/cursor": float(self.cursor), "time/generate": 0.0, "time/old_logprobs": 0.0}

        def state_dict(self):
            return {"cursor": self.cursor}

        def load_state_dict(self, state):
            self.cursor = state["cursor"]

    cfg = TrainConfig(steps=3, questions_per_step=2, max_new_tokens=40, checkpoint_every=0)
    trainer = Trainer(tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64), TOK, url.methods.sft(), ROWS, cfg,
                      producer=Replay)
    assert isinstance(trainer.producer, RolloutProducer)
    history = trainer.run(progress=False)
    assert [m["replay/cursor"] for m in history] == [2.0, 4.0, 6.0] and all(m["loss"] == m["loss"] for m in history)
    state = trainer.checkpointer.state_dict()
    assert state["source"] == {"cursor": 6}
    trainer.producer.cursor = 0
    trainer.checkpointer.load_state_dict(state)
    assert trainer.producer.cursor == 6
    with pytest.raises(TypeError, match="producer Bare does not satisfy url.RolloutProducer: no load_state_dict, metrics, produce"):
        class Bare:
            def __init__(self, trainer):
                pass

        Trainer(tiny_llama(len(TOK), hidden=32, layers=1, heads=2, intermediate=64), TOK, url.methods.sft(), ROWS, cfg, producer=Bare)
