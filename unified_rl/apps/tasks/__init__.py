"""The embedded default task: a char tokenizer and verifiable arithmetic chains (an app: the library never imports it)."""

from ...methods import Method
from ...protocols import RewardFunction
from ...rewards import AfterMarker, OutcomeReward, ProcessReward
from .arithmetic import ArithmeticTask, Problem, final_answer, parse_problem, step_checks
from .tokenizer import ARITHMETIC_CHARS, char_tokenizer, chat_tokenizer

extract_answer = AfterMarker("#")  # the arithmetic task's answer follows the last '#'


def task_reward(method: Method, tokenizer) -> RewardFunction:
    """The arithmetic task's exact reward for ``method``: per-step (process) rewards if its
    coefficient reads them, else the outcome (answer correct)."""
    if "step_rewards" in method.coefficient.needs:
        return ProcessReward(tokenizer, step_checks)
    return OutcomeReward(extract_answer)

__all__ = ["ArithmeticTask", "Problem", "final_answer", "parse_problem", "step_checks", "ARITHMETIC_CHARS", "char_tokenizer", "chat_tokenizer", "extract_answer", "task_reward"]
