"""Evaluation: greedy accuracy, Pass@K (any of K samples correct) and Maj@K (majority vote),
estimated from n >= K samples per problem (``unified_rl.accuracy_stats``).

Completions come from any ``Sampler``; ``extract`` reads a completion's final answer (e.g.
``rewards.AfterMarker("####")``), compared with the row's ``answer`` column, number-normalised.
"""

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .data.sources import Encoder
from .protocols import Sampler
from .rewards.answers import normalize_number
from .accuracy_stats import maj_at_k, pass_at_k

Extractor = Callable[[str], Optional[str]]
# A judge scores completions against their rows: 1.0 right, 0.0 wrong, None when it cannot tell
# (e.g. ``rewards.verify_answer``'s math-verify equivalence).
Judge = Callable[[Sequence[str], Sequence[dict]], Sequence[Optional[float]]]


def _texts(model: nn.Module, encoder: Encoder, sampler: Sampler, rows: Sequence[dict], k: int, max_new_tokens: int,
           temperature: float, generator: Optional[torch.Generator], batch_size: int) -> list[list[str]]:
    """``k`` decoded completions per row."""
    out: list[list[str]] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        gen = sampler.sample(model, [encoder.prompt(r) for r in chunk], k, max_new_tokens, temperature, generator)
        texts = [encoder.decode(c) for c in gen.completion_ids]
        out.extend(texts[j * k: (j + 1) * k] for j in range(len(chunk)))
    return out


def _answers(model: nn.Module, encoder: Encoder, sampler: Sampler, extract: Extractor, rows: Sequence[dict], k: int, max_new_tokens: int,
             temperature: float, generator: Optional[torch.Generator], batch_size: int) -> list[list[Optional[str]]]:
    texts = _texts(model, encoder, sampler, rows, k, max_new_tokens, temperature, generator, batch_size)
    return [[extract(t) for t in row] for row in texts]


def judged(model: nn.Module, encoder: Encoder, rows: Sequence[dict], ks: Sequence[int], *, sampler: Sampler, judge: Judge,
           temperature: float = 1.0, max_new_tokens: int = 48, seed: int = 0, batch_size: int = 64) -> dict:
    """Greedy accuracy and Pass@K as ``judge`` scores the completions (no Maj@K: a judge compares a
    completion with the reference, not two completions). A completion the judge cannot score counts
    as not correct and is counted under ``unverifiable``, never hidden."""
    greedy = [v[0] for v in _judge_rows(judge, _texts(model, encoder, sampler, rows, 1, max_new_tokens, 0.0, None, batch_size), rows)]
    out: dict = {"greedy_accuracy": sum(v == 1.0 for v in greedy) / len(rows), "unverifiable_greedy": sum(v is None for v in greedy)}
    if ks:
        kmax, g = max(ks), torch.Generator().manual_seed(seed)
        scores = _judge_rows(judge, _texts(model, encoder, sampler, rows, kmax, max_new_tokens, temperature, g, batch_size), rows)
        out["at_k"] = {k: {"pass": sum(pass_at_k(kmax, sum(v == 1.0 for v in row), k) for row in scores) / len(rows)} for k in ks}
        out["unverifiable_samples"] = sum(v is None for row in scores for v in row)
    return out


def _judge_rows(judge: Judge, texts: list[list[str]], rows: Sequence[dict]) -> list[list[Optional[float]]]:
    flat = judge([t for row in texts for t in row], [r for r, row in zip(rows, texts) for _ in row])
    k = len(texts[0]) if texts else 0
    return [list(flat[i * k: (i + 1) * k]) for i in range(len(texts))]


def greedy_texts(model: nn.Module, encoder: Encoder, rows: Sequence[dict], *, sampler: Sampler, max_new_tokens: int = 48,
                 batch_size: int = 256) -> list[str]:
    """Per row: its greedy completion, decoded."""
    return [t[0] for t in _texts(model, encoder, sampler, rows, 1, max_new_tokens, 0.0, None, batch_size)]


def greedy_correct(model: nn.Module, encoder: Encoder, rows: Sequence[dict], *, sampler: Sampler, extract: Extractor,
                   max_new_tokens: int = 48, batch_size: int = 256) -> list[bool]:
    """Per row: whether its greedy completion's final answer equals column ``answer`` (for paired statistics)."""
    answers = _answers(model, encoder, sampler, extract, rows, 1, max_new_tokens, 0.0, None, batch_size)
    return [a[0] == normalize_number(r["answer"]) for a, r in zip(answers, rows)]


def greedy_accuracy(model: nn.Module, encoder: Encoder, rows: Sequence[dict], *, sampler: Sampler, extract: Extractor,
                    max_new_tokens: int = 48, batch_size: int = 256) -> float:
    """Fraction of ``rows`` whose greedy completion's final answer equals column ``answer``."""
    correct = greedy_correct(model, encoder, rows, sampler=sampler, extract=extract, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return sum(correct) / len(rows)


def pass_and_majority(model: nn.Module, encoder: Encoder, rows: Sequence[dict], ks: Sequence[int], *, sampler: Sampler, extract: Extractor,
                      temperature: float = 1.0, max_new_tokens: int = 48, seed: int = 0, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """Pass@K and Maj@K for each K in ``ks`` from n = max(ks) samples per question: Pass@K by the
    unbiased estimator, Maj@K averaged over K-subsets of the n (``unified_rl.accuracy_stats``)."""
    per_problem = pass_and_majority_per_problem(model, encoder, rows, ks, sampler=sampler, extract=extract, temperature=temperature,
                                                max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    return {k: {"pass": sum(v["pass"]) / len(rows), "maj": sum(v["maj"]) / len(rows)} for k, v in per_problem.items()}


def pass_and_majority_per_problem(model: nn.Module, encoder: Encoder, rows: Sequence[dict], ks: Sequence[int], *, sampler: Sampler,
                                  extract: Extractor, temperature: float = 1.0, max_new_tokens: int = 48, seed: int = 0,
                                  batch_size: int = 64) -> dict[int, dict[str, list[float]]]:
    """As :func:`pass_and_majority`, each problem's own estimate (for paired statistics)."""
    kmax = max(ks)
    g = torch.Generator().manual_seed(seed)
    answers = _answers(model, encoder, sampler, extract, rows, kmax, max_new_tokens, temperature, g, max(1, batch_size // max(1, kmax // 8)))
    truths = [normalize_number(row["answer"]) for row in rows]
    return {k: {"pass": [pass_at_k(kmax, sum(a == t for a in ans), k) for ans, t in zip(answers, truths)],
                "maj": [maj_at_k(ans, t, k, seed=seed) for ans, t in zip(answers, truths)]} for k in ks}


__all__ = ["greedy_accuracy", "pass_and_majority", "pass_and_majority_per_problem", "judged", "Judge"]
