"""Evaluation: greedy accuracy, Pass@K (any of K samples correct) and Maj@K (majority vote).

Completions come from any ``Sampler``; ``extract`` reads a completion's final answer (e.g.
``rewards.AfterMarker("####")``), compared with the row's ``answer`` column, number-normalised.
"""

from collections import Counter
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .data.sources import Encoder
from .protocols import Sampler
from .rewards.answers import normalize_number

Extractor = Callable[[str], Optional[str]]


def _answers(model: nn.Module, encoder: Encoder, sampler: Sampler, extract: Extractor, rows: Sequence[dict], k: int, max_new_tokens: int,
             temperature: float, generator: Optional[torch.Generator], batch_size: int) -> list[list[Optional[str]]]:
    out: list[list[Optional[str]]] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        gen = sampler.sample(model, [encoder.prompt(r) for r in chunk], k, max_new_tokens, temperature, generator)
        answers = [extract(encoder.decode(c)) for c in gen.completion_ids]
        out.extend(answers[j * k: (j + 1) * k] for j in range(len(chunk)))
    return out


def greedy_accuracy(model: nn.Module, encoder: Encoder, rows: Sequence[dict], *, sampler: Sampler, extract: Extractor,
                    max_new_tokens: int = 48, batch_size: int = 256) -> float:
    """Fraction of ``rows`` whose greedy completion's final answer equals column ``answer``."""
    answers = _answers(model, encoder, sampler, extract, rows, 1, max_new_tokens, 0.0, None, batch_size)
    return sum(a[0] == normalize_number(r["answer"]) for a, r in zip(answers, rows)) / len(rows)


def pass_and_majority(model: nn.Module, encoder: Encoder, rows: Sequence[dict], ks: Sequence[int], *, sampler: Sampler, extract: Extractor,
                      temperature: float = 1.0, max_new_tokens: int = 48, seed: int = 0, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """Pass@K and Maj@K for each K in ``ks`` from max(ks) samples per question (the first K used)."""
    kmax = max(ks)
    g = torch.Generator().manual_seed(seed)
    answers = _answers(model, encoder, sampler, extract, rows, kmax, max_new_tokens, temperature, g, max(1, batch_size // max(1, kmax // 8)))
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
