"""The arithmetic task with a calculator: the model writes a step's expression ("7*4=") and ends its
turn; the calculator answers with the result ("28;"); the model goes on from there and finally
writes "#answer". Only the model's tokens are trained; the calculator's are context."""

import re
from typing import Optional

from ...environments import Environment, Reply
from .arithmetic import parse_problem

_STEP = re.compile(r"(\d+)([+\-*])(\d+)=")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class Calculator(Environment):
    """One episode on an arithmetic row: a turn ending in "a op b=" is computed (the reply is the value
    and ";"); a turn with "#" is the final answer and ends the episode, rewarded 1 when it is the row's
    answer, else 0 (no answer is a wrong answer). A turn that is neither gets ";" back (counted as a
    tool error)."""

    def reset(self, row: dict) -> Optional[str]:
        self.answer, self.given = str(row["answer"]), None
        return None

    def step(self, turn) -> Reply:
        text = turn.text
        if "#" in text:
            self.given = text.rpartition("#")[2].strip()
            return Reply(done=True)
        m = _STEP.search(text)
        if m is None or not text.endswith("="):
            return Reply(text=";", info={"tool_calls": 1, "tool_errors": 1})
        return Reply(text=f"{_OPS[m.group(2)](int(m.group(1)), int(m.group(3)))};", info={"tool_calls": 1})

    def reward(self) -> float:
        return float(self.given == self.answer)


def tool_episode(prompt: str) -> list[str]:
    """A worked solution with the calculator: the model's turns (each step's expression, then the
    answer) alternating with the calculator's replies. ``7*4-1=`` gives
    ``["7*4=", "28;", "28-1=", "27;", "#27"]``."""
    turns = []
    for step in parse_problem(prompt).steps():
        expression, _, value = step.rpartition("=")
        turns += [expression + "=", value + ";"]
    return turns + ["#" + str(parse_problem(prompt).answer)]


def tool_rows(rows: list[dict]) -> list[dict]:
    """Rows with their worked solutions as calculator episodes (column ``episode``)."""
    return [{"prompt": r["prompt"], "answer": r["answer"], "episode": tool_episode(r["prompt"])} for r in rows]
