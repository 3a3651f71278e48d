"""Token ids for an episode: the first prompt (with the tools, through the chat template) and each
environment reply, rendered once and appended to the ids the model saw -- never re-rendering the
conversation between turns (token-in / token-out: the history is the tokens, not the text)."""

from typing import Any, Callable, Optional, Sequence

from ..data.chat import CHAT

_DUMMY = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]


class Renderer:
    """Renders an episode's pieces with ``tokenizer``: through its chat template when it has one (the
    template renders ``tools=`` and the replies' messages), as plain text otherwise."""

    def __init__(self, tokenizer: Any, tools: Sequence[Callable] = ()):
        self.tokenizer, self.tools = tokenizer, list(tools)
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        from ..hf.tool_schemas import tool_schemas  # transformers reads the schemas: the hf floor

        self.schemas = tool_schemas(self.tools)
        if self.tools and not self.chat:
            raise ValueError("an environment with tools needs a tokenizer with a chat template (it renders the tools and their calls)")
        self._turn_end = self._after_assistant_turn() if self.chat else ""

    def _after_assistant_turn(self) -> str:
        """The template's rendering of a conversation up to the end of an assistant turn (its end
        token included): what every reply's rendering starts with, rendered once."""
        prefix = self.tokenizer.apply_chat_template(_DUMMY, tools=self.schemas or None, tokenize=False)
        eos = self.tokenizer.eos_token
        return prefix[: prefix.rindex(eos) + len(eos)] if eos and eos in prefix else prefix.rstrip()

    def prompt(self, row: dict, extra: Optional[str]) -> list[int]:
        """The first prompt's ids. With a chat template, an episode is a conversation: the row's
        messages (a plain-text prompt as one user message) rendered with the tools and the generation
        prompt, ``extra`` (what ``reset`` returned) appended to the last user message. Without one,
        the prompt and ``extra`` are tokenised as they are."""
        messages = row.get(CHAT) or (row["prompt"] if isinstance(row.get("prompt"), list) else None)
        if messages is None and not self.chat:
            text = row["prompt"] + (extra or "")
            return self.tokenizer(text, add_special_tokens=True).input_ids
        if messages is None:
            messages = [{"role": "user", "content": row["prompt"]}]
        messages = [dict(m) for m in messages]
        if extra:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user") if any(m["role"] == "user" for m in messages) else None
            if last is None:
                messages.append({"role": "user", "content": extra})
            else:
                messages[last]["content"] += extra
        text = self.tokenizer.apply_chat_template(messages, tools=self.schemas or None, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def reply(self, messages: Optional[Sequence[dict]], text: Optional[str], token_ids: Optional[Sequence[int]]) -> list[int]:
        """The ids the model is shown after its turn (which ended in eos): the template's rendering of
        ``messages`` after an assistant turn, up to the next assistant turn's header (TRL's
        ``_get_tool_suffix_ids``, cut after the assistant's end token rather than its last character, so
        the newline a template writes after it belongs to the reply); or ``text`` tokenised; or ``token_ids``."""
        if token_ids is not None:
            return [int(t) for t in token_ids]
        if text is not None:
            return self.tokenizer(text, add_special_tokens=False).input_ids
        if not self.chat:
            return self.tokenizer("".join(m["content"] for m in messages), add_special_tokens=False).input_ids
        full = self.tokenizer.apply_chat_template(_DUMMY + list(messages), tools=self.schemas or None, add_generation_prompt=True, tokenize=False)
        if not full.startswith(self._turn_end):
            raise ValueError("the chat template renders a conversation's earlier turns differently once a reply follows them, "
                             "so the reply cannot be appended to the tokens the model saw")
        return self.tokenizer(full[len(self._turn_end):], add_special_tokens=False).input_ids
