"""The command line's data and model flags: data files read and checked (a JSON Lines reader that
names lines, or ``datasets`` for other formats and folders), ``--format`` inferred from the first
row's columns, the model and tokenizer loaded (or the embedded tiny ones built), the reward and the
answer reader chosen."""

import functools
import json
import os
from typing import Optional

from ..config import TrainConfig

COLUMN_FLAGS = ("prompt", "completion", "answer", "chosen", "rejected")


def _rename(args) -> dict[str, str]:
    """``--prompt-column text`` ... : the file's column names -> this library's."""
    out = {getattr(args, f"{c}_column"): c for c in COLUMN_FLAGS if getattr(args, f"{c}_column", None)}
    return {k: v for k, v in out.items() if k != v}


@functools.lru_cache(maxsize=4)
def _table(path: str, split: Optional[str], rename: tuple[tuple[str, str], ...]):
    """A data file or folder read through ``datasets`` once per command (the format is inferred from
    it, then its rows are checked)."""
    from ..data.files import load_table

    return load_table(path, split=split, rename=dict(rename))


def _via_datasets(path: str, args) -> bool:
    """JSON Lines files without renames or a split keep the line-exact reader; the rest go through ``datasets``."""
    return os.path.isdir(path) or not path.endswith(".jsonl") or bool(_rename(args)) or getattr(args, "split", None) is not None


def _rows(path: Optional[str], fmt: str, args, max_prompt_chars: Optional[int] = None, answers: bool = False):
    """Rows of a data file or folder, checked when loaded; ``answers``: every row needs a non-empty
    ``answer`` (rewards and accuracy read it; a missing or null answer is never scored as 0)."""
    from ..data.rows import SCHEMAS, gsm8k_rows, read_jsonl, validate_row

    if fmt not in SCHEMAS:
        raise ValueError(f"--format must be one of {sorted(SCHEMAS)}, got {fmt!r}")
    columns = SCHEMAS[fmt] + (("answer",) if answers and "answer" not in SCHEMAS[fmt] else ())
    nonempty = ("answer",) if answers else ()
    if not _via_datasets(path, args):
        if fmt == "gsm8k":
            return gsm8k_rows(path)
        return read_jsonl(path, columns, max_prompt_chars=max_prompt_chars, nonempty=nonempty)
    if fmt == "gsm8k":
        raise ValueError("--format gsm8k reads GSM8K's own JSONL files; for other files map the columns (--prompt-column, --answer-column)")
    from ..data.chat import normalize

    rows = [normalize(r) for r in _table(path, getattr(args, "split", None), tuple(sorted(_rename(args).items())))]
    for row in rows:
        validate_row(row, columns, where=row.origin, max_prompt_chars=max_prompt_chars, nonempty=nonempty)
    return rows


def infer_format(path: str, args=None) -> str:
    """The ``--format`` a data file's first row shows by its columns (after ``--*-column`` renames):
    chosen + rejected -> preference; question (no prompt) -> gsm8k; completion -> prompt_completion;
    prompt -> prompts. A file that cannot be read this way gets prompt_completion, whose reader then
    names the problem."""
    try:
        if args is not None and _via_datasets(path, args):
            keys = set(_table(path, getattr(args, "split", None), tuple(sorted(_rename(args).items())))[0])
        else:
            with open(path, encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), "")
            keys = set(json.loads(first)) if first else set()
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return "prompt_completion"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if "question" in keys and "prompt" not in keys:
        return "gsm8k"
    if "completion" in keys or "messages" in keys or "prompt" not in keys:
        return "prompt_completion"
    return "prompts"


def _model_and_data(args, cfg: TrainConfig, need_train: bool = True, answers: bool = True):
    """Validate data first (before any model is loaded), then load or build the model. ``answers``:
    the training rows are scored, so each needs an ``answer`` (held-out rows always do)."""
    from ..hf import load_model, load_tokenizer, tiny_llama
    from .tasks import ArithmeticTask, char_tokenizer

    if args.model and not os.path.isdir(args.model):  # cheap, so before building or reading any data
        raise FileNotFoundError(f"model path {args.model!r} is not a local folder (nothing is downloaded)")
    if args.data:
        rows = _rows(args.data, args.format, args, answers=answers)
        eval_rows = _rows(args.eval_data, args.format, args, answers=True) if getattr(args, "eval_data", None) else None
    else:
        task = ArithmeticTask(seed=cfg.run.seed)
        eval_rows = task.eval_rows(cfg.run.eval_size)
        rows = task.train_rows(20_000, eval_size=cfg.run.eval_size) if need_train else eval_rows
    if args.model:
        model = load_model(args.model, trust_remote_code=args.trust_remote_code)  # first: it refuses pickled weights
        tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code, pad_token=args.pad_token)
    else:
        tok = char_tokenizer()
        model = tiny_llama(len(tok), seed=cfg.run.seed)
    return model, tok, rows, eval_rows


def _extract(args):
    """How answers are read: after the last ``--answer-marker`` (GSM8K: '####'; default '#')."""
    from ..rewards import AfterMarker

    return AfterMarker(args.answer_marker or ("####" if args.format == "gsm8k" else "#"))


def _reward(args, method, tok):
    """The run's reward: none for supervised data; the arithmetic task's exact rewards on the
    embedded task; else the answer column compared with the extracted answer."""
    from ..data.recipes import Supervised
    from ..rewards import OutcomeReward
    from .tasks import task_reward

    if isinstance(method.data_source, Supervised):
        return None
    if getattr(args, "reward", None) == "math":
        from ..rewards import math_reward

        return math_reward("answer")
    return task_reward(method, tok) if not args.data else OutcomeReward(_extract(args))


