"""Rows from a local data file or folder of any common format, through ``datasets.load_dataset``
(JSON Lines, JSON, CSV, Parquet; nothing is downloaded), with the columns renamed to this
library's (``prompt``, ``completion``, ``answer``, ``chosen``, ``rejected``). Each row keeps where
it came from (``file, row N``), so later checks name it.
"""

import csv
import json
import os
from typing import Mapping, Optional

from .row import Row
from .rows import check_fits_in_memory, jsonl_objects

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _files(path: str) -> tuple[str, list[str]]:
    """The datasets builder and the files of ``path`` (a file, or a folder of files of one kind)."""
    if os.path.isdir(path):
        found = sorted(os.path.join(path, f) for f in os.listdir(path) if os.path.splitext(f)[1].lower() in BUILDERS)
        kinds = {BUILDERS[os.path.splitext(f)[1].lower()] for f in found}
        if not found:
            raise ValueError(f"{path}: no {', '.join(sorted(BUILDERS))} files in this folder")
        if len(kinds) > 1:
            raise ValueError(f"{path}: files of several kinds ({', '.join(sorted(kinds))}); keep one kind per folder")
        return kinds.pop(), found
    ext = os.path.splitext(path)[1].lower()
    if ext not in BUILDERS:
        raise ValueError(f"{path}: unknown file type {ext!r}; use one of {', '.join(sorted(BUILDERS))}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} not found")
    return BUILDERS[ext], [path]


def _text_columns(path: str, datasets) -> "datasets.Features":
    """Every column of a CSV file (its header) as text, after checking that each line is UTF-8 and
    that there is a row below the header (one line naming the file and line otherwise)."""
    header, rows = None, 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {number}: not UTF-8 (byte {e.start} of the line); save the file as UTF-8") from None
            if header is None:
                header = next(csv.reader([line]), None)
            elif line.strip():
                rows += 1
    if not header:
        raise ValueError(f"{path}: empty (no header line)")
    if not rows:
        raise ValueError(f"{path}: zero rows (a header line only)")
    return datasets.Features({name: datasets.Value("string") for name in header})


def _check_json(path: str) -> None:
    """A JSON Lines file line by line, or a JSON document whole: a fault is one line with the file,
    line and column (datasets would only say that generating the dataset failed)."""
    if path.lower().endswith(".jsonl"):
        for _ in jsonl_objects(path):
            pass
        return
    check_fits_in_memory(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8; save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line, as datasets also reads a .json file
            for _ in jsonl_objects(path):
                pass
            return
        raise ValueError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None


def _parquet_rows(path: str) -> int:
    """The row count a Parquet file's footer states (one line naming the file if it has none)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # pyarrow's own error types: not a Parquet file, a damaged footer
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause of ``error`` (datasets wraps a parser's own message --
    with its line and column -- in "An error occurred while generating the dataset")."""
    seen = [error]
    while (seen[-1].__cause__ or seen[-1].__context__) is not None and len(seen) < 20:
        seen.append(seen[-1].__cause__ or seen[-1].__context__)
    for e in reversed(seen):
        if str(e).strip():
            return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    return type(error).__name__


def load_table(path: str, *, split: Optional[str] = None, rename: Optional[Mapping[str, str]] = None) -> list[Row]:
    """The rows of a local file or folder (``split``: a folder's split named by its file names, e.g.
    ``train`` / ``test``; a single file is its own ``train`` split). ``rename`` maps the file's
    column names to this library's. A CSV's cells are read as the text they hold (``3`` stays
    ``"3"``, ``NA`` and ``True`` stay words); JSON and Parquet numbers become their text."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("reading CSV, Parquet or JSON data, or a folder, needs the datasets library: pip install 'unified_rl[data]'") from e
    builder, files = _files(path)
    if os.path.isdir(path):
        by_split = {s: [f for f in files if os.path.basename(f).startswith(s)] for s in ("train", "validation", "test")}
        data_files = {s: fs for s, fs in by_split.items() if fs} or {"train": files}
    else:
        data_files = {"train": files}
    split = split or "train"
    if split not in data_files:
        raise ValueError(f"{path}: no split {split!r} (has {', '.join(sorted(data_files))}; a folder's splits are named by its files)")
    datasets.disable_progress_bars()
    # CSV cells are the user's text: no type inference ("3" stays "3", not 3.0), no NA guessing
    text = {}
    for f in data_files[split]:  # each file checked with its own line numbers before datasets reads it
        if builder == "csv":
            text = {"features": _text_columns(f, datasets), "keep_default_na": False, "na_filter": False}
        elif builder == "json":
            _check_json(f)
        elif _parquet_rows(f) == 0:
            raise ValueError(f"{f}: zero rows")
    try:
        table = datasets.load_dataset(builder, data_files=data_files, split=split, **text)
    except Exception as e:  # the reason is at the bottom of datasets' chain of exceptions: one line, with the path
        raise ValueError(f"{path}: cannot be read as {builder}: {_reason(e)}") from None
    rename = dict(rename or {})
    missing = [c for c in rename if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} to read (columns: {', '.join(table.column_names)})")
    rows = []
    for i, record in enumerate(table):
        row = {rename.get(k, k): (str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in record.items()}
        rows.append(Row(row, f"{path}, row {i}"))
    if not rows:
        raise ValueError(f"{path}: zero rows")
    return rows
