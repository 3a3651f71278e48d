"""The embedded default: a char tokenizer, tiny models and the verifiable arithmetic task."""

from .arithmetic import ArithmeticTask, Problem, final_answer, parse_problem, step_checks
from .models import build_qwen2, check_tokenizer, load_model, load_tokenizer, qwen2_config, tiny_llama
from .tokenizer import ARITHMETIC_CHARS, char_tokenizer

__all__ = ["ArithmeticTask", "Problem", "final_answer", "parse_problem", "step_checks", "build_qwen2", "check_tokenizer",
           "load_model", "load_tokenizer", "qwen2_config", "tiny_llama", "ARITHMETIC_CHARS", "char_tokenizer"]
