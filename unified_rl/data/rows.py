"""Loading rows from JSONL files: prompt/completion, chosen/rejected and GSM8K, validated.

Every error names the file, the line (row) and the column. Nothing is unpickled.
"""

import json
import os
import re
from typing import Any, Iterator, Optional, Sequence

from .chat import check_messages, normalize
from .row import Row

GSM8K_TEMPLATE = "Question: {question}\nAnswer:"
SCHEMAS = {
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "gsm8k": ("question", "answer"),
    "prompts": ("prompt",),
}


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _check_text(value: Any, where: str, key: str = "") -> None:
    """Every string in a decoded row (keys included) must be encodable as UTF-8 (no lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}, key {key!r}: text that cannot be encoded as UTF-8 (a lone surrogate at character {e.start})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where, k)
            _check_text(v, where, k)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, where, key)


def free_memory() -> Optional[int]:
    """Bytes of memory available now (Linux ``MemAvailable``), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_fits_in_memory(path: str, factor: int = 4) -> None:
    """A file read whole, whose rows become Python objects (about ``factor`` times its size), must
    fit in the memory available; else one line naming the file and both sizes (not a MemoryError)."""
    size, free = os.path.getsize(path), free_memory()
    if free is not None and size * factor > free:
        raise ValueError(f"{path}: {_bytes(size)}, more than this machine's free memory ({_bytes(free)}) holds "
                         f"once read (about {factor}x the file); split it into several files in a folder (--data FOLDER reads them "
                         "through datasets, which maps them from disk)")


def jsonl_objects(path: str) -> Iterator[tuple[int, dict]]:
    """(physical line number, object) for each non-blank line of a JSONL file. Lines are split on
    ``\\n`` only (U+2028 or U+0085 inside a string are valid JSON). Every fault -- invalid UTF-8,
    invalid JSON (with its column), a duplicate key, nesting too deep, an integer too long, a lone
    surrogate, a line that is not an object -- is one ValueError naming the file and the line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    check_fits_in_memory(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: invalid UTF-8 (byte {e.start})") from None
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON at column {e.colno} ({e.msg})") from None
        except _DuplicateKey as e:
            raise ValueError(f"{where}: duplicate key {e.key!r} in one object") from None
        except (RecursionError, ValueError) as e:  # nesting too deep; an integer over Python's digit limit
            raise ValueError(f"{where}: cannot be decoded ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        _check_text(row, where)
        yield line_no, row


def read_jsonl(path: str, required: Sequence[str], *, max_prompt_chars: Optional[int] = None, prompt_column: str = "prompt",
               nonempty: Sequence[str] = ()) -> list[dict]:
    """Rows of a JSONL file (see :func:`jsonl_objects`); each must be an object whose ``required``
    columns are strings (the prompt and the ``nonempty`` columns non-empty)."""
    rows = []
    for line_no, row in jsonl_objects(path):
        row = normalize(Row(row, f"{path}, line {line_no}"))  # messages / implicit prompts in explicit form
        validate_row(row, required, where=f"{path}, line {line_no}", max_prompt_chars=max_prompt_chars, prompt_column=prompt_column,
                     nonempty=nonempty)
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: zero rows")
    return rows


def validate_row(row: dict, required: Sequence[str], *, where: str, max_prompt_chars: Optional[int] = None, prompt_column: str = "prompt",
                 nonempty: Sequence[str] = ()) -> None:
    """Check one row's required columns (present, strings, non-empty prompt and ``nonempty`` columns, length limit)."""
    for col in required:
        if col not in row:
            raise ValueError(f"{where}: missing column {col!r} (has {sorted(row)}); on the command line, "
                             f"--{col}-column names the file's column that holds it")
        if isinstance(row[col], list) and col in ("prompt", "completion", "chosen", "rejected"):  # messages (chat.py)
            check_messages(row[col], where, col)
            continue
        if isinstance(row[col], list):
            raise ValueError(f"{where}: column {col!r} holds a list (chat messages?) where text is expected; messages go in the "
                             "prompt, completion, chosen or rejected column (--prompt-column ... names yours), an answer is text")
        if not isinstance(row[col], str):
            got = "null" if row[col] is None else type(row[col]).__name__
            raise ValueError(f"{where}: column {col!r} must be a string, got {got}")
        if (col == prompt_column or col in nonempty) and not row[col].strip():
            raise ValueError(f"{where}: column {col!r} is empty")
    if max_prompt_chars is not None and prompt_column in row and len(row[prompt_column]) > max_prompt_chars:
        raise ValueError(f"{where}: column {prompt_column!r} has {len(row[prompt_column])} characters, over the limit of {max_prompt_chars}")


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_rows(path: str, template: str = GSM8K_TEMPLATE) -> list[dict]:
    """GSM8K's format (``question``, ``answer`` ending in ``#### N``) as prompt/completion/answer rows;
    errors name the physical line."""
    out = []
    for i, (line_no, row) in enumerate(jsonl_objects(path), start=1):
        validate_row(row, SCHEMAS["gsm8k"], where=f"{path}, line {line_no}", prompt_column="question")
        m = _GSM8K_ANSWER.search(row["answer"])
        final = m.group(1).replace(",", "").strip() if m else ""
        if not final:
            raise ValueError(f"{path}, line {line_no}, row {i}: column 'answer' does not end in '#### N' with a non-empty N")
        out.append(Row({"prompt": template.format(question=row["question"]), "completion": " " + row["answer"].strip(), "answer": final},
                       f"{path}, line {line_no}"))
    if not out:
        raise ValueError(f"{path}: zero rows")
    return out


def check_rows(rows: Sequence[dict], required: Sequence[str], name: str = "rows") -> list[dict]:
    """Validate in-memory rows (e.g. a list of dicts or a ``datasets.Dataset``) the same way."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"{name}: zero rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{name}, row {i}: expected a dict, got {type(row).__name__}")
        validate_row(row, required, where=f"{name}, row {i}")
    return rows
