"""Tool schemas for chat templates: transformers' ``get_json_schema`` with one-line errors."""

from typing import Callable, Sequence


def tool_schemas(tools: Sequence[Callable]) -> list[dict]:
    """The JSON schema of each tool (transformers' ``get_json_schema``, what chat templates render);
    a one-line ValueError naming the tool whose signature or docstring cannot describe it."""
    from transformers.utils import get_json_schema

    out = []
    for fn in tools:
        name = getattr(fn, "__name__", repr(fn))
        if not callable(fn):
            raise ValueError(f"tool {name!r} is not callable")
        try:
            out.append(get_json_schema(fn))
        except Exception as e:  # transformers' TypeHintParsingException / DocstringParsingException
            raise ValueError(f"tool {name!r} has no usable schema ({type(e).__name__}: {str(e).splitlines()[0]}); give every "
                             "argument a type hint and describe it in a Google-style docstring (Args:)") from None
    return out
