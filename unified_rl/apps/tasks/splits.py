"""A task design where RL can win honestly: worked solutions only for short chains, longer
chains as answers-only questions, evaluation on large fresh sets of both the RL length and a harder one.

* ``sft``: worked solutions of ``sft_steps`` (2-3) operations -- the only supervised data -- plus,
  when ``sft_long_size`` > 0, that many worked solutions of ``sft_long_steps`` (a few longer
  examples, so the start sometimes writes a longer chain for RL to reinforce);
* ``validation``: more of them, held out, to choose the SFT checkpoint;
* ``rl``: questions of ``rl_steps`` (3-5) operations with their answers only (no worked solution);
* ``eval_in``: held-out questions of the RL length; ``eval_hard``: of ``hard_steps`` (5-6).

No prompt is in two splits. An SFT continuation can only use ``sft``; RL can use ``rl``, rewarded
by the final answer alone.

With ``teacher_share`` > 0 (the flawed-teacher design, ``tasks.teacher``) the worked solutions of
``sft`` and ``validation`` come from a teacher that writes large products 10 too high in that share
of them; ``fresh`` holds ``fresh_size`` more of its demonstrations on new problems (the control's
genuinely new supervised data, in the same mix of lengths), and ``eval_short`` held-out questions
of the SFT length. RL and evaluation keep the true answers.
"""

from dataclasses import dataclass

from .arithmetic import ArithmeticTask


@dataclass(frozen=True)
class ChainSplits:
    """The splits' sizes and chain lengths (see the module docstring)."""

    sft_size: int = 2000
    validation_size: int = 512
    rl_size: int = 20_000
    eval_size: int = 4096
    sft_steps: tuple[int, int] = (2, 3)
    rl_steps: tuple[int, int] = (3, 5)
    hard_steps: tuple[int, int] = (5, 6)
    sft_long_size: int = 0
    sft_long_steps: tuple[int, int] = (4, 4)
    teacher_share: float = 0.0
    fresh_size: int = 0

    def build(self) -> dict[str, list[dict]]:
        """The splits by name: rows with ``prompt``, ``answer`` and (``sft``, ``validation``) ``completion``."""
        eval_in = ArithmeticTask(*self.rl_steps, seed=1).eval_rows(self.eval_size)
        eval_hard = ArithmeticTask(*self.hard_steps, seed=2).eval_rows(self.eval_size)
        taken = {r["prompt"] for r in eval_in + eval_hard}
        validation = self._draw(ArithmeticTask(*self.sft_steps), 10, self.validation_size, taken)
        sft = self._draw(ArithmeticTask(*self.sft_steps), 11, self.sft_size, taken)
        if self.sft_long_size:
            sft += self._draw(ArithmeticTask(*self.sft_long_steps), 13, self.sft_long_size, taken)
        rl = [{"prompt": r["prompt"], "answer": r["answer"]} for r in self._draw(ArithmeticTask(*self.rl_steps), 12, self.rl_size, taken)]
        out = {"sft": sft, "validation": validation, "rl": rl, "eval_in": eval_in, "eval_hard": eval_hard}
        return self._teacher(out, taken) if self.teacher_share else out

    def _teacher(self, out: dict, taken: set) -> dict:
        """The flawed teacher's splits (see the module docstring), drawn after the others so that they stay as they were."""
        from .teacher import teach

        long = round(self.fresh_size * self.sft_long_size / (self.sft_size + self.sft_long_size))
        fresh = self._draw(ArithmeticTask(*self.sft_steps), 14, self.fresh_size - long, taken)
        fresh += self._draw(ArithmeticTask(*self.sft_long_steps), 15, long, taken)
        short = self._draw(ArithmeticTask(*self.sft_steps), 16, self.eval_size, taken)
        return {**out, "sft": teach(out["sft"], self.teacher_share, 0), "validation": teach(out["validation"], self.teacher_share, 1),
                "fresh": teach(fresh, self.teacher_share, 2), "eval_short": short}

    @staticmethod
    def _draw(task: ArithmeticTask, seed: int, n: int, taken: set) -> list[dict]:
        """``n`` distinct rows of ``task`` whose prompts are not in ``taken`` (which then holds them too)."""
        rows, stream = [], task.stream(seed)
        while len(rows) < n:
            p = next(stream)
            if p.prompt not in taken:
                taken.add(p.prompt)
                rows.append(p.row())
        return rows
