"""Conversational rows (TRL's dataset formats) rendered with the tokenizer's chat template.

A conversational column holds a list of messages ``{"role": ..., "content": ...}``. The formats are
TRL's: prompt-only ``{"prompt"}``, prompt-completion ``{"prompt", "completion"}``, preference with an
explicit ``{"prompt", "chosen", "rejected"}`` or implicit prompt ``{"chosen", "rejected"}`` (the
shared leading turns), plus ``{"messages"}``, read here as prompt = every turn before the last and
completion = the last (an assistant turn). Standard rows hold strings instead; an implicit prompt is
extracted from them too.

Rendering follows TRL's ``apply_chat_template``: the prompt with the generation prompt (or, when it
ends in an assistant turn, continuing that turn), each completion as the text the template adds
after the prompt. A rendered row keeps its original messages under :data:`CHAT`, so reward
functions receive prompts and completions as messages, as TRL's do, and its prompt is tokenised
without added special tokens (the template wrote them).
"""

from itertools import takewhile
from typing import Any, Sequence

from .row import Row, where

CHAT = "_chat_prompt"  # the conversational prompt a rendered row came from
TURN_COLUMNS = ("prompt", "completion", "chosen", "rejected", "messages")


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def is_conversational(row: dict) -> bool:
    """True when one of the row's turn columns holds messages (TRL's ``is_conversational``)."""
    return any(_is_messages(row.get(c)) for c in TURN_COLUMNS)


def check_messages(value: Any, where_: str, column: str) -> None:
    """A conversational column: a non-empty list of {role, content} with string role and content."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where_}: column {column!r} must be a string or a non-empty list of messages")
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where_}: column {column!r}, message {k}: expected {{'role': str, 'content': str}}, got {m!r:.80}")


def extract_prompt(row: dict) -> dict:
    """An implicit-prompt preference row with its prompt made explicit: the longest common leading
    part of ``chosen`` and ``rejected`` (turns, or characters for strings), as TRL's ``extract_prompt``."""
    chosen, rejected = row["chosen"], row["rejected"]
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":  # the space before the answers stays with them
                idx -= 1
            break
    return {**row, "prompt": chosen[:idx], "chosen": chosen[idx:], "rejected": rejected[idx:]}


def normalize(row: dict, index: int = 0) -> dict:
    """A row in explicit form: ``messages`` split into prompt and completion, an implicit
    preference prompt extracted; any other row as it is. Needs no tokenizer."""
    out = row
    if "messages" in row and "prompt" not in row:
        check_messages(row["messages"], where(row, index), "messages")
        turns = row["messages"]
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise ValueError(f"{where(row, index)}: column 'messages' must end in an assistant turn after at least one other "
                             "(it is read as prompt = the turns before, completion = that turn)")
        out = {k: v for k, v in row.items() if k != "messages"} | {"prompt": turns[:-1], "completion": turns[-1:]}
    elif "chosen" in row and "rejected" in row and "prompt" not in row:
        out = extract_prompt(row)
        if not out["prompt"]:
            raise ValueError(f"{where(row, index)}: 'chosen' and 'rejected' share no leading part, so there is no implicit prompt; "
                             "add a 'prompt' column")
    return Row(out, where(row, index)) if out is not row else row


def _template(tokenizer: Any, messages: list, **kw) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def render(row: dict, tokenizer: Any, index: int = 0) -> dict:
    """A conversational row as text, through ``tokenizer``'s chat template (see the module
    docstring); a standard row as it is. Errors name the row."""
    row = normalize(row, index)
    if not is_conversational(row):
        return row
    at = where(row, index)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{at}: the row is conversational (lists of messages) but the tokenizer has no chat template; "
                         "use a tokenizer that has one, or give the prompt as text")
    for col in ("prompt", "completion", "chosen", "rejected"):
        if col in row:
            check_messages(row[col], at, col)
    prompt_turns = row["prompt"]
    if not any(m["content"].strip() for m in prompt_turns):
        raise ValueError(f"{at}: column 'prompt': every message is empty, so there is nothing to answer")
    last = prompt_turns[-1]["role"]
    if last not in ("user", "tool", "assistant", "system"):
        raise ValueError(f"{at}: column 'prompt' ends in a message of role {last!r}")
    ends_in_answer = last == "assistant"
    try:
        prompt = _template(tokenizer, prompt_turns, add_generation_prompt=not ends_in_answer, continue_final_message=ends_in_answer)
        full = {col: _template(tokenizer, prompt_turns + row[col]) for col in ("chosen", "rejected", "completion") if col in row}
    except Exception as e:  # jinja2's TemplateError / TemplateSyntaxError, or the template's raise_exception
        if not type(e).__module__.startswith("jinja2"):
            raise
        raise ValueError(f"{at}: the tokenizer's chat template fails on this row ({type(e).__name__}: {e}); "
                         "fix the template, or leave out what it refuses (e.g. a system message)") from None
    if not prompt.strip():
        raise ValueError(f"{at}: the chat template renders the prompt as empty text (messages without content?)")
    for col in ("chosen", "rejected"):  # templates that add a token with the generation prompt: keep the common part
        if col in full:
            prompt = "".join(a for a, _ in takewhile(lambda p: p[0] == p[1], zip(prompt, full[col])))
    out = {**row, "prompt": prompt, CHAT: prompt_turns}
    for col, text in full.items():
        if not text.startswith(prompt):
            raise ValueError(f"{at}: the chat template renders prompt + {col} differently from the prompt alone, so the {col} "
                             "cannot be cut off after the prompt")
        out[col] = _strip_eos(text[len(prompt):], tokenizer)
    return Row(out, at)


def _strip_eos(text: str, tokenizer: Any) -> str:
    """A rendered completion without a final eos token (the encoder appends one) or trailing whitespace."""
    eos = tokenizer.eos_token or ""
    stripped = text.rstrip()
    return stripped[: -len(eos)] if eos and stripped.endswith(eos) else text


def render_rows(rows: Sequence[dict], tokenizer: Any) -> list[dict]:
    """Every row rendered (see :func:`render`); standard rows are returned as they are, without a
    call per row (a plain-text data set of many rows costs one pass of dictionary lookups)."""
    return [r if ("messages" not in r and ("prompt" in r or "chosen" not in r or "rejected" not in r)  # nothing to normalize
                  and not any(isinstance(r.get(c), list) for c in TURN_COLUMNS))  # nor to render
            else render(r, tokenizer, i) for i, r in enumerate(rows)]


def as_messages(completion: str) -> list[dict]:
    """A completion in the conversational format a reward function receives (TRL's)."""
    return [{"role": "assistant", "content": completion}]
