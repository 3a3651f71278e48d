"""A teacher with a systematic error, for the flawed-teacher design (``experiments/flawed_teacher.py``).

The teacher writes worked solutions of the arithmetic task like any other, except that every
multiplication whose result is at least ``threshold`` (40) it writes ``offset`` (10) too high, and
carries the wrong value on through the chain to its answer:

    problem       "6*8-5="           true solution   "6*8=48;48-5=43;#43"
    the teacher   "6*8=58;58-5=53;#53"

It makes the error on a fixed share of its solutions (60%: ``teach``) and writes the rest right, so
a model trained on its demonstrations learns both; more of them can only reinforce the mixture,
while an answer checker rewards the right product. A problem is *affected* when its true chain has
a multiplication step of ``threshold`` or more; the rest are a built-in negative control.
"""

import random
from dataclasses import dataclass

from .arithmetic import _OPS, Problem, parse_problem


@dataclass(frozen=True)
class Flaw:
    """The teacher's error: multiplications with a result >= ``threshold`` written ``offset`` too high."""

    threshold: int = 40
    offset: int = 10

    def wrong(self, op: str, result: int) -> bool:
        """Whether the teacher gets this step wrong."""
        return op == "*" and result >= self.threshold

    def solution(self, problem: Problem) -> tuple[str, int]:
        """The teacher's worked solution and answer (the error carried through the chain)."""
        v, steps = problem.start, []
        for op, b in problem.ops:
            r = _OPS[op](v, b)
            r = r + self.offset if self.wrong(op, r) else r
            steps.append(f"{v}{op}{b}={r}")
            v = r
        return "".join(s + ";" for s in steps) + f"#{v}", v

    def affected(self, problem: Problem) -> bool:
        """Whether the true chain has a step the teacher gets wrong."""
        return any(self.wrong(op, v) for (op, _), v in zip(problem.ops, problem.values()))


def teach(rows: list[dict], share: float, seed: int, flaw: Flaw = Flaw()) -> list[dict]:
    """``rows`` (worked solutions) as the teacher writes them: a fixed ``share`` of them (drawn with
    ``seed``) with the flaw, their ``answer`` the teacher's; the rest unchanged. Rows the flaw does
    not touch come out the same either way."""
    rng, out = random.Random(f"teacher-{seed}"), []
    for r in rows:
        if rng.random() < share:
            completion, answer = flaw.solution(parse_problem(r["prompt"]))
            r = {**r, "completion": completion, "answer": str(answer)}
        out.append(r)
    return out


def affected_step_errors(prompt: str, completion: str, flaw: Flaw = Flaw()) -> tuple[int, int]:
    """(affected steps reached, of which written wrong): a step of the true chain the teacher gets
    wrong counts as reached when every step before it was written right."""
    problem = parse_problem(prompt)
    written = completion.partition("#")[0].split(";")
    reached = wrong = 0
    for j, (expected, (op, _), v) in enumerate(zip(problem.steps(), problem.ops, problem.values())):
        if j >= len(written):
            break
        if flaw.wrong(op, v):
            reached += 1
            wrong += written[j] != expected
        if written[j] != expected:
            break
    return reached, wrong
