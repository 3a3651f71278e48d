"""The shared set-up of the paper figures on the task design where RL could win honestly.

* **Starts.** SFT to convergence on 2,000 worked 2-3-step solutions plus 200 worked 4-step ones
  (``ChainSplits(sft_long_size=200)``, the settings of ``rl-vs-sft-long``), cosine decay, the
  checkpoint chosen on held-out short problems; saved as safetensors with a JSON record and reused
  (``rl_vs_sft.sft_start``).
* **RL questions** of ``rl_ops`` operations (4-5), answers only, where the start succeeds on about
  5% (5 steps) to 80% (4 steps) -- a room for outcome RL that the 3-5 mix did not leave.
* **Validation**: ``validation_size`` RL-length questions held out of RL, on which each method's
  learning rate is chosen from ``lr_grid`` (the same rule for every method and the control).
* **Evaluation**: greedy accuracy on the fresh ``eval_in`` problems of ``rl_ops`` lengths and the
  harder 5-6-step ``eval_hard`` problems.
* **Arms**, each from the same start, with the same number of updates: the SFT-continuation
  control (more supervised data: the start's own demonstrations again or, in the flawed-teacher
  design, ``fresh`` ones of the same teacher); RFT on a fixed pool collected once from the start (as many samples as the online methods
  draw); Online RFT; GRPO with outcome and with process supervision.
"""

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..progress import bars
from ... import methods, threads
from ...config import TrainConfig
from ...data import Encoder, SampledSource
from ...hf import make_sampler
from ...loop import Trainer
from ...rewards import OutcomeReward
from .rl_vs_sft import RLvsSFT, _correct, by_length, cell, sft_start
from ..tasks import char_tokenizer, extract_answer, parse_problem, task_reward
from ..tasks.splits import ChainSplits


def _starts() -> RLvsSFT:
    return RLvsSFT(splits=ChainSplits(sft_long_size=200))


TEACHER_SHARE = 0.6  # the flawed teacher's share of wrong solutions (``tasks.teacher``)


def teacher_design(sft_seeds: int = 1, rl_seeds: int = 1, fresh_size: int = 100 * 64) -> "Design":
    """The flawed-teacher design: the figures' design whose worked solutions come from the flawed
    teacher, with ``fresh_size`` fresh demonstrations of it for the control (by default as many as
    its 100 updates of 64 rows use)."""
    splits = ChainSplits(sft_long_size=200, teacher_share=TEACHER_SHARE, fresh_size=fresh_size)
    return Design(starts=RLvsSFT(splits=splits), sft_seeds=sft_seeds, rl_seeds=rl_seeds)


def quick_teacher_design(rl_seeds: int = 1) -> "Design":
    """A CI-sized flawed-teacher design (no claim)."""
    d = dataclasses.replace(Design.quick(), rl_seeds=rl_seeds)
    d.starts.splits = dataclasses.replace(d.starts.splits, teacher_share=TEACHER_SHARE, fresh_size=16)
    return d


class TeacherVariants:
    """For a figure's size class (a dataclass with a ``design`` and a ``quick()``): the same figure on
    the flawed-teacher design, ``teacher()`` (2 SFT seeds x 2 RL seeds) and ``teacher_quick()`` (CI-sized)."""

    @classmethod
    def teacher(cls):
        """The figure on ``teacher_design``, 2 SFT seeds x 2 RL seeds."""
        return cls(design=teacher_design(sft_seeds=2, rl_seeds=2))

    @classmethod
    def teacher_quick(cls):
        """The quick size on ``quick_teacher_design`` (no claim)."""
        return dataclasses.replace(cls.quick(), design=quick_teacher_design())


@dataclass
class Design:
    """Sizes and settings shared by the figures. With the SFT starts loaded from
    ``docs/results/starts``, on 2 cores: figure5-lr 13 minutes and figure5 19, figure7 9,
    figure6 24-26."""

    starts: RLvsSFT = field(default_factory=_starts)  # the SFT starts' settings (their saved files are keyed on them)
    rl_ops: tuple[int, int] = (4, 5)
    validation_size: int = 512
    steps: int = 100
    questions_per_step: int = 16
    group_size: int = 8
    beta: float = 0.04
    epsilon: float = 0.2
    control_batch: int = 64
    lr_grid: tuple[float, ...] = (1e-4, 3e-4)
    sft_seeds: int = 2
    rl_seeds: int = 2

    @classmethod
    def quick(cls) -> "Design":
        """A CI-sized run (no claim)."""
        starts = RLvsSFT.quick()
        starts.splits = dataclasses.replace(starts.splits, sft_long_size=8)
        return cls(starts=starts, validation_size=8, steps=2, questions_per_step=2, group_size=2, control_batch=4,
                   lr_grid=(1e-4, 3e-4), sft_seeds=1, rl_seeds=2)

    @property
    def max_new_tokens(self) -> int:
        return self.starts.max_new_tokens


def chain_length(prompt: str) -> int:
    """The number of operations of a task prompt."""
    return len(parse_problem(prompt).ops)


def build_data(d: Design) -> dict[str, list[dict]]:
    """The splits: ``sft``, ``validation_sft`` (chooses the SFT checkpoint), ``rl``, ``validation``
    (RL-length questions held out of ``rl``), ``eval_in`` (of ``rl_ops`` lengths) and ``eval_hard``."""
    s = d.starts.splits.build()
    lo, hi = d.rl_ops
    rl = [r for r in s["rl"] if lo <= chain_length(r["prompt"]) <= hi]
    if len(rl) <= d.validation_size:
        raise ValueError(f"Design: only {len(rl)} RL questions of {lo}-{hi} operations; need more than validation_size={d.validation_size}")
    return {"sft": s["sft"], "validation_sft": s["validation"], "rl": rl[d.validation_size:], "validation": rl[: d.validation_size],
            "eval_in": [r for r in s["eval_in"] if lo <= chain_length(r["prompt"]) <= hi], "eval_hard": s["eval_hard"],
            **{k: s[k] for k in ("fresh", "eval_short") if k in s}}  # the flawed teacher's


def start(d: Design, seed: int, data: dict, starts_dir: str):
    """The saved (or newly trained and saved) SFT start of ``seed`` and its record."""
    splits = {"sft": data["sft"], "validation": data["validation_sft"]}
    return sft_start(d.starts, seed, splits, starts_dir)


def correct(model, rows, d: Design) -> np.ndarray:
    """Per-problem greedy correctness (0/1) on ``rows``."""
    return _correct(model, char_tokenizer(), rows, d.starts)


def _cfg(d: Design, lr: float, seed: int, batch: Optional[int] = None, **kw) -> TrainConfig:
    return TrainConfig(steps=d.steps, questions_per_step=batch or d.questions_per_step, lr=lr, warmup_steps=min(10, d.steps // 2),
                       max_new_tokens=d.max_new_tokens, seed=seed, **kw)


def arm_method(arm: str, d: Design) -> methods.Method:
    """An online arm's method, built with the design's G, beta and epsilon where the method takes them."""
    settings, entry = dict(group_size=d.group_size, beta=d.beta, epsilon=d.epsilon), methods.REGISTRY[arm]
    return methods.build(arm, **{k: v for k, v in settings.items() if entry.parameter(k)})


def labelled_samples(model, rows: list[dict], d: Design, n: int, seed: int) -> list[tuple[str, str, float]]:
    """``n`` samples of a frozen copy of ``model`` on ``rows`` (``group_size`` per question, in
    batches of ``questions_per_step`` questions), as (prompt, completion, rule label)."""
    tok = char_tokenizer()
    src = SampledSource(rows, Encoder(tok), make_sampler("static", tok), samples_per_question=d.group_size, frozen=copy.deepcopy(model),
                        max_new_tokens=d.max_new_tokens, seed=seed)
    rule, out = OutcomeReward(extract_answer), []
    while len(out) < n:
        r = src.sample(None, d.questions_per_step)
        out += [(s.prompt, s.completion, float(y)) for s, y in zip(r.texts, rule(r, r.texts).rewards.tolist())]
    return out[:n]


def collect_pool(model, data: dict, d: Design, seed: int) -> tuple[list[dict], int]:
    """RFT's fixed pool: ``steps x questions_per_step`` RL questions, ``group_size`` samples each
    (the total the online methods draw), sampled once from the frozen start; the correct ones as
    supervised rows. Returns (rows, samples drawn)."""
    drawn = d.steps * d.questions_per_step * d.group_size
    samples = labelled_samples(model, data["rl"], d, drawn, seed)
    return [{"prompt": p, "completion": c} for p, c, y in samples if y > 0.5], drawn


ARMS = ("control", "rft", "online_rft", "grpo", "grpo_process")
ARM_NAMES = {"start": "SFT start", "control": "SFT continuation (control)", "rft": "RFT (fixed pool)", "online_rft": "Online RFT",
             "grpo": "GRPO outcome", "grpo_process": "GRPO process"}


def arm_trainer(arm: str, base, data: dict, d: Design, lr: float, seed: int, pool: Optional[list[dict]] = None, eval_every: int = 0,
                reward=None, rft_batch: Optional[int] = None, **cfg_kw) -> Optional[Trainer]:
    """The Trainer of one arm on a copy of ``base`` (its ``policy``); ``pool``: RFT's rows, ``rft_batch``
    its rows per update (default: as many as the online arms sample). None for an empty pool (the
    start solved none of the sampled questions: no update to make)."""
    tok = char_tokenizer()
    model = copy.deepcopy(base)
    ev = dict(eval_rows=data["validation"], extract=extract_answer) if eval_every else {}
    if arm in ("control", "rft"):
        rows = (data.get("fresh") or data["sft"]) if arm == "control" else pool  # the teacher's fresh demonstrations where it has some
        if not rows:
            return None
        batch = d.control_batch if arm == "control" else rft_batch or d.questions_per_step * d.group_size
        cfg = _cfg(d, lr, seed, batch, eval_every=eval_every, eval_size=d.validation_size, **cfg_kw)
        return Trainer(model, tok, methods.sft(), rows, cfg, phase=arm, **ev, adapt_threads=threads.per_step())
    cfg = _cfg(d, lr, seed, eval_every=eval_every, eval_size=d.validation_size, **cfg_kw)
    method = arm_method(arm, d)
    return Trainer(model, tok, method, data["rl"], cfg, reward=reward or task_reward(method, tok), phase=arm, **ev, adapt_threads=threads.per_step())


def train_arm(arm: str, base, data: dict, d: Design, lr: float, seed: int, pool: Optional[list[dict]] = None,
              eval_every: int = 0, reward=None, rft_batch: Optional[int] = None, **cfg_kw):
    """One arm trained from a copy of ``base`` (:func:`arm_trainer`); returns (model, history). An
    empty RFT pool makes no update: a copy of the start and an empty history are returned."""
    trainer = arm_trainer(arm, base, data, d, lr, seed, pool, eval_every, reward, rft_batch, **cfg_kw)
    if trainer is None:
        return copy.deepcopy(base), []
    return trainer.policy, trainer.run(progress=bars())


def drift(history: list[dict]) -> Optional[float]:
    """The mean per-token KL to the reference (k3) over the last 10 updates, where the arm has one."""
    kl = [m["kl/k3"] for m in history[-10:] if "kl/k3" in m]
    return float(np.mean(kl)) if kl else None


def seeds_line(d: Design) -> str:
    """The sentence that says how many paired runs a table averages and what its intervals cover."""
    return (f"{d.sft_seeds} SFT seed(s) x {d.rl_seeds} RL seed(s) = {d.sft_seeds * d.rl_seeds} paired runs; differences paired over "
            "the same starts, seeds and problems, 95% bootstrap intervals over runs and problems")


def verdict(diff: tuple) -> str:
    """A claim that b - a > 0 is reproduced when the interval lies above 0, not reproduced when it
    lies below, and inconclusive when it includes 0."""
    _, lo, hi = diff
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced (the opposite holds)"
    return "inconclusive (the interval includes 0)"


__all__ = ["Design", "teacher_design", "quick_teacher_design", "TeacherVariants", "TEACHER_SHARE", "chain_length", "ARMS", "ARM_NAMES", "build_data", "start", "correct", "labelled_samples", "collect_pool", "arm_trainer", "train_arm", "drift", "by_length",
           "seeds_line", "cell", "verdict"]
