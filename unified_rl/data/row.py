"""A row of data that knows where it came from, and how errors name it."""


class Row(dict):
    """A row read from a file: a plain dict of its columns that also knows where it came from
    (``origin``, e.g. ``"train.jsonl, line 7"``), so later checks can name the line."""

    origin: str = ""

    def __init__(self, columns: dict, origin: str):
        super().__init__(columns)
        self.origin = origin


def where(row: dict, index: int) -> str:
    """How errors name a row: its file and line if it was read from one, else its index."""
    return getattr(row, "origin", "") or f"row {index}"
