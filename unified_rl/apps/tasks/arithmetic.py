"""The built-in verifiable task: chains of arithmetic with chain-of-thought steps.

A question applies 2-4 operations left to right, like a calculator, and the solution writes
one step per operation, then the answer:

    prompt      "7+5-3*2="
    completion  "7+5=12;12-3=9;9*2=18;#18"

Every step and the final answer can be checked exactly, so outcome rewards (answer correct)
and process rewards (each step correct, at the step's last character) are both exact.
Operands are 1-9 and every running value stays in 0-99.
"""

import random
import re
from dataclasses import dataclass
from typing import Iterator, Optional

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)$")


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def prompt(self) -> str:
        return str(self.start) + "".join(f"{op}{b}" for op, b in self.ops) + "="

    def values(self) -> list[int]:
        """The running value after each operation."""
        out, v = [], self.start
        for op, b in self.ops:
            v = _OPS[op](v, b)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> list[str]:
        """The expected step strings, 'a op b=c'."""
        prev, out = self.start, []
        for (op, b), v in zip(self.ops, self.values()):
            out.append(f"{prev}{op}{b}={v}")
            prev = v
        return out

    @property
    def solution(self) -> str:
        return "".join(s + ";" for s in self.steps()) + f"#{self.answer}"

    def row(self) -> dict:
        """The problem as a dataset row: prompt, completion (worked solution) and answer."""
        return {"prompt": self.prompt, "completion": self.solution, "answer": str(self.answer)}


def random_problem(rng: random.Random, min_steps: int = 2, max_steps: int = 4) -> Problem:
    """A random chain of ``min_steps``..``max_steps`` operations."""
    v = rng.randint(1, 9)
    start, ops = v, []
    for _ in range(rng.randint(min_steps, max_steps)):
        choices = [(op, b) for op in _OPS for b in range(1, 10) if 0 <= _OPS[op](v, b) <= 99]
        op, b = rng.choice(choices)
        ops.append((op, b))
        v = _OPS[op](v, b)
    return Problem(start, tuple(ops))


def parse_problem(prompt: str) -> Problem:
    """The Problem of a prompt like '7+5-3*2='."""
    m = re.fullmatch(r"(\d+)((?:[+\-*]\d+)+)=", prompt)
    if not m:
        raise ValueError(f"not an arithmetic-chain prompt: {prompt!r}")
    return Problem(int(m.group(1)), tuple((op, int(b)) for op, b in re.findall(r"([+\-*])(\d+)", m.group(2))))


def final_answer(completion: str) -> Optional[str]:
    """The text after the last '#', stripped; None if there is none."""
    if "#" not in completion:
        return None
    return completion.rsplit("#", 1)[1].strip()


def step_checks(prompt: str, completion: str) -> list[tuple[int, bool]]:
    """(index of the step's last character, correct?) for each written step, then the chain's end.

    Step j is correct when it is exactly the j-th expected step ("a op b = c" with a the true
    previous value). The end "#N" is correct only when N is the true answer *and* every expected
    step was written: an unfinished chain is never rewarded (a missing step or a missing answer
    makes the end wrong, so stopping early cannot earn the reward). Without "#", the end is the
    completion's last character and is wrong. A completion with no recognisable part gets one
    wrong "step" ending at its last character.
    """
    problem = parse_problem(prompt)
    expected = problem.steps()
    body, hashed, answer = completion.partition("#")
    out: list[tuple[int, bool]] = []
    pos = 0
    for j, part in enumerate(body.split(";")):
        if part == "" and pos >= len(body):
            break
        end = pos + len(part)  # index of the ';' (or of the last char if none)
        last = end if end < len(body) else max(end - 1, pos)
        out.append((last, j < len(expected) and part == expected[j]))
        pos = end + 1
    written = len(out)
    last_char = max(len(completion) - 1, 0)
    finished = bool(hashed) and written >= len(expected) and answer.strip() == str(problem.answer)
    if out and out[-1][0] == last_char:  # the last step is also the end: it carries the end's verdict
        out[-1] = (last_char, out[-1][1] and finished)
    else:
        out.append((last_char, finished))
    return out


@dataclass
class ArithmeticTask:
    """Train/held-out splits of arithmetic chains; held-out questions never appear in training."""

    min_steps: int = 2
    max_steps: int = 4
    seed: int = 0

    def eval_rows(self, n: int = 256) -> list[dict]:
        """``n`` distinct held-out problems (fixed by the seed)."""
        rng = random.Random(f"eval-{self.seed}")
        seen, rows = set(), []
        while len(rows) < n:
            p = random_problem(rng, self.min_steps, self.max_steps)
            if p.prompt not in seen:
                seen.add(p.prompt)
                rows.append(p.row())
        return rows

    def train_rows(self, n: int, eval_size: int = 256) -> list[dict]:
        """``n`` training problems, none of which is among the first ``eval_size`` held-out ones."""
        held_out = {r["prompt"] for r in self.eval_rows(eval_size)}
        rng = random.Random(f"train-{self.seed}")
        rows = []
        while len(rows) < n:
            p = random_problem(rng, self.min_steps, self.max_steps)
            if p.prompt not in held_out:
                rows.append(p.row())
        return rows

    def stream(self, seed: int) -> Iterator[Problem]:
        """An endless stream of random problems."""
        rng = random.Random(seed)
        while True:
            yield random_problem(rng, self.min_steps, self.max_steps)
