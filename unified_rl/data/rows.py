"""Loading rows from JSONL files: prompt/completion, chosen/rejected and GSM8K, validated.

Every error names the file, the line (row) and the column. Nothing is unpickled.
"""

import json
import os
import re
from typing import Optional, Sequence

GSM8K_TEMPLATE = "Question: {question}\nAnswer:"
SCHEMAS = {
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "gsm8k": ("question", "answer"),
    "prompts": ("prompt",),
}


def read_jsonl(path: str, required: Sequence[str], *, max_prompt_chars: Optional[int] = None, prompt_column: str = "prompt",
               nonempty: Sequence[str] = ()) -> list[dict]:
    """Rows of a JSONL file; each must be an object whose ``required`` columns are strings (the prompt
    and the ``nonempty`` columns non-empty)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: invalid UTF-8 (byte {e.start})") from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}")
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
            raise ValueError(f"{where}: missing column {col!r} (has {sorted(row)})")
        if not isinstance(row[col], str):
            got = "null" if row[col] is None else type(row[col]).__name__
            raise ValueError(f"{where}: column {col!r} must be a string, got {got}")
        if (col == prompt_column or col in nonempty) and not row[col].strip():
            raise ValueError(f"{where}: column {col!r} is empty")
    if max_prompt_chars is not None and prompt_column in row and len(row[prompt_column]) > max_prompt_chars:
        raise ValueError(f"{where}: column {prompt_column!r} has {len(row[prompt_column])} characters, over the limit of {max_prompt_chars}")


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_rows(path: str, template: str = GSM8K_TEMPLATE) -> list[dict]:
    """GSM8K's format (``question``, ``answer`` ending in ``#### N``) as prompt/completion/answer rows."""
    out = []
    for i, row in enumerate(read_jsonl(path, SCHEMAS["gsm8k"], prompt_column="question"), start=1):
        m = _GSM8K_ANSWER.search(row["answer"])
        if not m:
            raise ValueError(f"{path}, row {i}: column 'answer' does not end in '#### N'")
        final = m.group(1).replace(",", "").strip()
        out.append({"prompt": template.format(question=row["question"]), "completion": " " + row["answer"].strip(), "answer": final})
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
