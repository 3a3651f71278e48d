"""Named experiments that reproduce DeepSeekMath's findings in miniature (``unified-rl experiment``).

Each writes a results folder: ``metrics.jsonl``, PNG plots and ``results.md`` (a Markdown table).
One module per experiment, each with a ``run(out, size)``; the table below names its size
class, so ``unified-rl --help`` lists them without importing torch. The figures run on the RL-vs-SFT task
design (``design.py``): SFT starts trained to convergence on
short worked solutions, saved and reused; RL on longer answers-only questions; paired statistics
over SFT seeds, RL seeds and problems.

* ``figure5`` (``figure5.py``): RFT on a fixed pool, Online RFT, GRPO outcome and process, and the
  SFT-continuation control; each arm's lr chosen from a grid the same way by ``figure5-lr``
  (``figure5_lr.py``), whose runs at the chosen lrs are figure5's first pair.
* ``process-vs-outcome`` (``process_vs_outcome.py``): GRPO process vs outcome on 5-6-step chains
  where the start succeeds on about a third.
* ``figure6`` (``figure6.py``): GRPO with a trained reward model, iterative vs not, with the reward
  model's held-out and on-policy accuracy.
* ``figure7`` (``figure7.py``): Pass@K and Maj@K, K = 1..64, before and after GRPO, on problems
  where Pass@64 starts far from 100%.
* ``grpo-vs-ppo-cost`` (``grpo_vs_ppo_cost.py``): parameters held and seconds per update, GRPO vs PPO with its value model.
* ``calculator`` (``calculator.py``): GRPO on multi-turn episodes with a calculator tool vs GRPO
  without it, on 4-5-step questions (the tool's format learnt by SFT on calculator episodes first).
* ``flawed-teacher`` (``flawed_teacher.py``): a teacher that writes large products 10 too high in
  60% of its worked solutions; the control gets fresh demonstrations of it, the RL arms answers-only
  questions with true answers; accuracy on affected and unaffected problems (a one-run pilot;
  ``flawed-teacher-full``: 3 SFT seeds x 3 RL seeds).
* ``figure5-teacher`` (``figure5_teacher.py``), ``figure6-teacher``, ``figure7-teacher``: the three
  figures on the flawed-teacher design (2 SFT seeds x 2 RL seeds each); in figure5-teacher RFT's
  batch holds as many samples as Online RFT's updates had correct ones (equal gradient samples).
* ``rl-vs-sft`` (``rl_vs_sft.py``): GRPO on 3-5-step answers-only questions vs more SFT, from a
  start with no worked solution longer than 3 steps; ``rl-vs-sft-long``: the same with 200 worked
  4-step solutions among the short ones (the figures' starts).
"""

import importlib
import os
import time
from dataclasses import dataclass

from ..progress import progress_bars


@dataclass(frozen=True)
class Experiment:
    """An experiment: the module of this package whose ``run(out, size)`` runs it, and its
    size as ``"module:Class"``, built with ``Class()`` (or the classmethod ``full``) or, for a quick
    run, with ``Class.quick()`` (or the classmethod ``quick``)."""

    module: str
    size: str
    full: str = ""
    quick: str = "quick"

    def build_size(self, quick: bool):
        """The experiment's size object (the quick one for a CI-sized run)."""
        module, name = self.size.split(":")
        cls = getattr(importlib.import_module(f".{module}", __name__), name)
        maker = self.quick if quick else self.full
        return getattr(cls, maker)() if maker else cls()


EXPERIMENTS: dict[str, Experiment] = {
    "figure5-lr": Experiment("figure5_lr", "design:Design"),
    "figure5": Experiment("figure5", "design:Design"),
    "process-vs-outcome": Experiment("process_vs_outcome", "process_vs_outcome:ProcessVsOutcome"),
    "figure6": Experiment("figure6", "figure6:Figure6"),
    "figure7": Experiment("figure7", "figure7:Figure7"),
    "rl-vs-sft": Experiment("rl_vs_sft", "rl_vs_sft:RLvsSFT"),
    "rl-vs-sft-long": Experiment("rl_vs_sft", "rl_vs_sft:RLvsSFT", full="long", quick="long_quick"),
    "grpo-vs-ppo-cost": Experiment("grpo_vs_ppo_cost", "design:Design"),
    "calculator": Experiment("calculator", "calculator:CalculatorSize"),
    "flawed-teacher": Experiment("flawed_teacher", "flawed_teacher:FlawedTeacher"),
    "flawed-teacher-full": Experiment("flawed_teacher", "flawed_teacher:FlawedTeacher", full="full"),
    "figure5-teacher": Experiment("figure5_teacher", "figure5_teacher:Figure5Teacher"),
    "figure6-teacher": Experiment("figure6", "figure6:Figure6", full="teacher", quick="teacher_quick"),
    "figure7-teacher": Experiment("figure7", "figure7:Figure7", full="teacher", quick="teacher_quick"),
}


def run_experiment(name: str, out_dir: str, quick: bool = False, progress: bool = True) -> str:
    """Run experiment ``name`` into ``out_dir`` (``quick`` for a CI-sized run); returns the results Markdown."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    import torch

    spec = EXPERIMENTS[name]
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    with progress_bars(progress):
        table = importlib.import_module(f".{spec.module}", __name__).run(out_dir, spec.build_size(quick))
    seconds = time.perf_counter() - t0
    text = f"# {name}\n\n{table}\n\nsize: {'quick' if quick else 'default'}; {seconds:.0f} s on {os.cpu_count()} CPUs, torch {torch.__version__}\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    return text
