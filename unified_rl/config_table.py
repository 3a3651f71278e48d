"""The configuration's fields as a Markdown table (docs/configuration.md is generated from it)."""

import dataclasses
import typing
from typing import Any, Literal


def type_name(t: Any) -> str:
    """A field's type as the table shows it: the choices of a Literal, "X or null" for Optional[X]."""
    args = typing.get_args(t)
    if typing.get_origin(t) is Literal:
        return " / ".join(args)
    return f"{type_name(args[0])} or null" if type(None) in args else getattr(t, "__name__", str(t))


def markdown_table(parts: dict[str, type]) -> str:
    """One row per field of each part (part, name, type, default, meaning)."""
    rows = [f"| `{part}` | `{f.name}` | {type_name(typing.get_type_hints(cls)[f.name])} | `{f.default!r}` | {f.metadata['help'].replace('|', '/')} |"
            for part, cls in parts.items() for f in dataclasses.fields(cls)]
    return "\n".join(["| part | field | type | default | meaning |", "|---|---|---|---|---|", *rows])
