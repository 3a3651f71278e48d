"""Rows from a local data file or folder of any common format, through ``datasets.load_dataset``
(JSON Lines, JSON, CSV, Parquet; nothing is downloaded), with the columns renamed to this
library's (``prompt``, ``completion``, ``answer``, ``chosen``, ``rejected``). Each row keeps where
it came from (``file, row N``), so later checks name it.
"""

import os
from typing import Mapping, Optional

from .row import Row

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


def load_table(path: str, *, split: Optional[str] = None, rename: Optional[Mapping[str, str]] = None) -> list[Row]:
    """The rows of a local file or folder (``split``: a folder's split named by its file names, e.g.
    ``train`` / ``test``; a single file is its own ``train`` split). ``rename`` maps the file's
    column names to this library's. Numbers in a column are read as their text (CSV answers)."""
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
    try:
        table = datasets.load_dataset(builder, data_files=data_files, split=split)
    except Exception as e:  # datasets' own message, one line, with the path: a file it cannot parse
        raise ValueError(f"{path}: cannot be read as {builder}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
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
