"""Evaluation: greedy accuracy, Pass@K (any of K samples correct) and Maj@K (majority vote)."""

from collections import Counter
from typing import Optional, Sequence

import torch
from torch import nn

from .data.sampling import generate
from .data.sources import Encoder
from .rewards.rule import extract_answer, normalize_number


def _answers(model: nn.Module, encoder: Encoder, rows: Sequence[dict], k: int, greedy: bool, max_new_tokens: int,
             temperature: float, generator: Optional[torch.Generator], batch_size: int) -> list[list[Optional[str]]]:
    tok = encoder.tokenizer
    out: list[list[Optional[str]]] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        gen = generate(model, [encoder.prompt(r) for r in chunk], group_size=k, max_new_tokens=max_new_tokens, eos_id=tok.eos_token_id,
                       pad_id=tok.pad_token_id, temperature=temperature, greedy=greedy, generator=generator)
        answers = [extract_answer(encoder.decode(c)) for c in gen.completion_ids]
        out.extend(answers[j * k: (j + 1) * k] for j in range(len(chunk)))
    return out


def greedy_accuracy(model: nn.Module, encoder: Encoder, rows: Sequence[dict], *, max_new_tokens: int = 48, batch_size: int = 256) -> float:
    """Fraction of ``rows`` whose greedy completion's final answer equals column ``answer``."""
    answers = _answers(model, encoder, rows, 1, True, max_new_tokens, 1.0, None, batch_size)
    return sum(a[0] == normalize_number(r["answer"]) for a, r in zip(answers, rows)) / len(rows)


def pass_and_majority(model: nn.Module, encoder: Encoder, rows: Sequence[dict], ks: Sequence[int], *, temperature: float = 1.0,
                      max_new_tokens: int = 48, seed: int = 0, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """Pass@K and Maj@K for each K in ``ks`` from max(ks) samples per question (the first K used)."""
    kmax = max(ks)
    g = torch.Generator().manual_seed(seed)
    answers = _answers(model, encoder, rows, kmax, False, max_new_tokens, temperature, g, max(1, batch_size // max(1, kmax // 8)))
    result: dict[int, dict[str, float]] = {}
    for k in ks:
        passed = majority = 0
        for ans, row in zip(answers, rows):
            truth = normalize_number(row["answer"])
            first = ans[:k]
            passed += any(a == truth for a in first)
            votes = Counter(a for a in first if a is not None)
            majority += bool(votes) and votes.most_common(1)[0][0] == truth
        result[k] = {"pass": passed / len(rows), "maj": majority / len(rows)}
    return result


__all__ = ["greedy_accuracy", "pass_and_majority"]
