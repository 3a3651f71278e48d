"""GRPO with a calculator tool vs without it, on the arithmetic task's 4-5-step questions
(``unified-rl experiment calculator``): multi-turn episodes on the tiny model, minutes on a laptop CPU.

Both arms start from the shipped SFT start (worked solutions without a tool). The tool arm first
learns the calculator's format by SFT on the same worked solutions written as calculator episodes
(``SupervisedEpisodes``: the model's turns trained, the calculator's results context), then trains
with GRPO on episodes with the calculator; the other arm trains with GRPO on single completions.
Same questions, updates, G, lr, beta and epsilon. Evaluated greedily on fresh problems, each arm as
it was trained (with or without the calculator), paired over the same problems.
"""

import copy
import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from ... import threads
from ...accuracy_stats import paired_difference
from ...config import TrainConfig
from ...data.encoder import Encoder
from ...environments import EpisodeSource, Limits, SupervisedEpisodes, with_environment
from ...hf import make_sampler
from ...loop import Trainer
from ...methods import sft
from ..demo import DemoSettings, sft_start
from ..machine_record import environment
from ..progress import bars
from ..tasks import char_tokenizer
from ..tasks.calculator import Calculator, tool_rows
from .design import arm_method, arm_trainer, correct, verdict

SPLITS = ("eval_in", "eval_hard")


@dataclass
class CalculatorSize:
    """The run's sizes: the calculator SFT, the GRPO phase of both arms and the evaluation."""

    tool_sft_steps: int = 150
    tool_sft_batch: int = 64
    tool_sft_lr: float = 3e-4
    steps: int = 60
    lr: float = 1e-4
    max_turns: int = 8               # a 6-step chain is 6 expressions and the answer
    turn_tokens: int = 8             # "28-1=" and eos; "#27" and eos
    eval_size: int = 1024            # problems per split
    demo: DemoSettings = dataclasses.field(default_factory=lambda: DemoSettings(flawed_teacher=False))

    @classmethod
    def quick(cls) -> "CalculatorSize":
        """A CI-sized run (no claim)."""
        return cls(tool_sft_steps=3, tool_sft_batch=4, steps=2, eval_size=8, demo=dataclasses.replace(DemoSettings.quick(), flawed_teacher=False))

    def limits(self) -> Limits:
        """An episode's limits: the turns and tokens a 6-step chain needs; calls unguarded (the calculator is ours)."""
        return Limits(max_turns=self.max_turns, max_tokens=self.max_turns * (self.turn_tokens + 4), timeout_s=None)


def _tool_start(base, data: dict, size: CalculatorSize, out: str):
    tok, model = char_tokenizer(), copy.deepcopy(base)
    rows = tool_rows(data["sft"])
    cfg = TrainConfig(steps=size.tool_sft_steps, questions_per_step=size.tool_sft_batch, lr=size.tool_sft_lr, max_new_tokens=size.turn_tokens,
                      warmup_steps=min(10, size.tool_sft_steps // 2), out_dir=out, checkpoint_every=0)
    source = SupervisedEpisodes(rows, Encoder(tok, 256, size.turn_tokens + 1))
    trainer = Trainer(model, tok, sft(), rows, cfg, data_source=source, phase="calculator_sft", adapt_threads=threads.per_step())
    return trainer.policy, trainer.run(progress=bars())


def _tool_grpo(start, data: dict, size: CalculatorSize, d, seed: int, out: str):
    tok = char_tokenizer()
    method = with_environment(arm_method("grpo", d), Calculator, size.limits())
    cfg = TrainConfig(steps=size.steps, questions_per_step=d.questions_per_step, lr=size.lr, warmup_steps=min(10, size.steps // 2),
                      max_new_tokens=size.turn_tokens, seed=seed, out_dir=out, checkpoint_every=0)
    trainer = Trainer(copy.deepcopy(start), tok, method, data["rl"], cfg, phase="grpo_calculator", adapt_threads=threads.per_step())
    return trainer.policy, trainer.run(progress=bars())


def tool_correct(model, rows: list[dict], size: CalculatorSize) -> np.ndarray:
    """Per-problem greedy correctness of ``model`` playing calculator episodes on ``rows``."""
    tok = char_tokenizer()
    source = EpisodeSource(rows, Encoder(tok, 256, size.turn_tokens + 1), make_sampler("static", tok), Calculator,
                           max_new_tokens=size.turn_tokens, temperature=0.0, limits=size.limits())
    out = []
    for i in range(0, len(rows), 256):
        out += [e.reward or 0.0 for e in source.run(model, rows[i: i + 256])]
    return np.array(out, dtype=np.float64)


def run(out: str, size: CalculatorSize) -> str:
    """Both arms trained and evaluated into ``out``; returns the results table (Markdown)."""
    s = dataclasses.replace(size.demo, steps=size.steps, lr=size.lr)
    base, record, data, shipped = sft_start(s, out)
    d, seed = s.design(), s.seed
    tool_start, h_sft = _tool_start(base, data, size, out)
    no_tool = arm_trainer("grpo", base, data, d, size.lr, seed, out_dir=out, checkpoint_every=0)
    h_plain = no_tool.run(progress=bars())
    tool, h_tool = _tool_grpo(tool_start, data, size, d, seed, out)
    rows = {sp: data[sp][: size.eval_size] for sp in SPLITS}
    scores = {("start", sp): correct(base, rows[sp], d) for sp in SPLITS}
    scores.update({("grpo", sp): correct(no_tool.policy, rows[sp], d) for sp in SPLITS})
    scores.update({("calculator start", sp): tool_correct(tool_start, rows[sp], size) for sp in SPLITS})
    scores.update({("grpo with calculator", sp): tool_correct(tool, rows[sp], size) for sp in SPLITS})
    arms = ("start", "grpo", "calculator start", "grpo with calculator")
    acc = {a: {sp: 100 * float(scores[a, sp].mean()) for sp in SPLITS} for a in arms}
    gain = {sp: [100 * x for x in paired_difference(scores["grpo", sp][None], scores["grpo with calculator", sp][None])] for sp in SPLITS}
    rl_part = {sp: [100 * x for x in paired_difference(scores["calculator start", sp][None], scores["grpo with calculator", sp][None])]
               for sp in SPLITS}
    turns = [m["env/turns"] for m in h_tool if "env/turns" in m]
    record_out = {"accuracy": acc, "calculator_minus_no_tool_points": gain, "grpo_with_calculator_minus_calculator_start_points": rl_part,
                  "problems": {sp: len(rows[sp]) for sp in SPLITS}, "turns_per_episode_last": turns[-1] if turns else None,
                  "sft_start": "shipped" if shipped else "trained in this run", "settings": dataclasses.asdict(size),
                  "environment": environment()}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record_out, f, indent=2, default=str)
    np.savez(os.path.join(out, "scores.npz"), **{f"{a}|{sp}": scores[a, sp] for a in arms for sp in SPLITS})
    _plot(acc, gain, os.path.join(out, "calculator.png"))
    return _table(acc, gain, rl_part, rows, len(h_sft), len(h_plain))


def _verdict(diff: list) -> str:
    """Whether the calculator helps: above 0, below 0, or no difference detected (never "equal")."""
    word = verdict(diff)
    return "yes" if word == "reproduced" else "no: it hurts" if word.startswith("not") else "no difference detected"


def _table(acc: dict, gain: dict, rl_part: dict, rows: dict, sft_steps: int, steps: int) -> str:
    lines = [f"Greedy accuracy (%) on fresh problems; GRPO {steps} updates per arm; the calculator's format learnt in {sft_steps} SFT steps.",
             "", "| arm | 4-5 steps | 5-6 steps |", "|---|---|---|"]
    lines += [f"| {a} | {acc[a]['eval_in']:.1f} | {acc[a]['eval_hard']:.1f} |" for a in acc]
    lines += ["", "| comparison (points, paired over problems, 95% CI) | 4-5 steps | 5-6 steps | above 0? (4-5 / 5-6) |", "|---|---|---|---|"]
    for name, diff in (("GRPO with calculator - GRPO without", gain), ("GRPO with calculator - its start (the RL part)", rl_part)):
        cells = [f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]" for m, lo, hi in (diff[sp] for sp in SPLITS)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {_verdict(diff['eval_in'])} / {_verdict(diff['eval_hard'])} |")
    lines += ["", f"Problems: {len(rows['eval_in'])} of 4-5 steps, {len(rows['eval_hard'])} of 5-6 steps; one SFT seed, one RL seed: "
              "the intervals cover the problems, not run-to-run variation."]
    return "\n".join(lines)


def _plot(acc: dict, gain: dict, path: str) -> None:
    from ..plots import figure

    fig, ax = figure(7, 3.5)
    arms = list(acc)
    for k, sp in enumerate(SPLITS):
        ax.bar([i + 0.4 * k for i in range(len(arms))], [acc[a][sp] for a in arms], width=0.4, label=("4-5 steps", "5-6 steps")[k])
    ax.set_xticks([i + 0.2 for i in range(len(arms))], arms, fontsize=8)
    ax.set_ylabel("greedy accuracy (%)")
    ax.set_title(f"calculator - no tool: {gain['eval_in'][0]:+.1f} / {gain['eval_hard'][0]:+.1f} points")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
