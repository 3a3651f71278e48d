"""The :class:`Encoder`: prompts and completions to token ids within the run's limits, every row of
a data set checked when its source is built (errors name the row and the column)."""

from dataclasses import dataclass
from typing import Any, Sequence

from .chat import CHAT
from .row import where


def _meaningless(pairs: list, tokenizer: Any) -> dict:
    """Why each prompt's token ids (``pairs`` of row index and ids) cannot mean anything, by row
    index: no token besides the special ones, or mostly the unknown token. Rows that can mean
    something are left out."""
    unk = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unk}
    out = {}
    for i, ids in pairs:
        content = [t for t in ids if t not in special]
        n_unk = sum(t == unk for t in content) if unk is not None else 0
        if not content:
            out[i] = "encodes to no tokens"
        elif 2 * n_unk > len(content):
            out[i] = f"encodes to {n_unk} unknown tokens of {len(content)}"
    return out


@dataclass
class Encoder:
    """Tokenises prompts and completions with limits; errors name the row and the column."""

    tokenizer: Any
    max_prompt_tokens: int = 256
    max_completion_tokens: int = 256

    def check(self, rows: Sequence[dict], columns: Sequence[str] = ("prompt",)) -> None:
        """Every row's ``columns`` within the limits, checked when a source is built, not when the
        row is drawn; a text too long to fit any tokenisation is refused before it is tokenised."""
        longest = max(len(t.encode("utf-8", "surrogatepass")) for t in self.tokenizer.get_vocab()) or 1
        for col in columns:
            prompt = col == "prompt"
            limit = self.max_prompt_tokens if prompt else self.max_completion_tokens - 1  # completions end in eos
            texts = [r.get(col) for r in rows]
            for i, text in enumerate(texts):
                if not isinstance(text, str) or (prompt and not text.strip()):
                    raise ValueError(f"{where(rows[i], i)}: column {col!r} must be a non-empty string" if prompt else
                                     f"{where(rows[i], i)}: column {col!r} must be a string, got {type(text).__name__}")
                if len(text.encode("utf-8", "surrogatepass")) > (limit + 1) * longest:
                    raise ValueError(f"{where(rows[i], i)}: column {col!r} has {len(text)} characters, more than "
                                     f"{'max_prompt_tokens' if prompt else 'max_completion_tokens'}={limit + (0 if prompt else 1)} tokens can hold")
            pairs = self._token_ids(rows, texts, prompt)
            meaningless = _meaningless(pairs, self.tokenizer) if prompt else {}
            for i, ids in pairs:
                if why := meaningless.get(i):
                    raise ValueError(f"{where(rows[i], i)}: column {col!r} {texts[i]!r:.40} {why} with this tokenizer; "
                                     "is it the model's own tokenizer, and the model's language?")
                if len(ids) > limit:
                    what = (f"has {len(ids)} tokens, over max_prompt_tokens={limit}" if prompt else
                            f"of {texts[i]!r:.60} has {len(ids) + 1} tokens with eos, over max_completion_tokens={limit + 1} (raise max_new_tokens)")
                    raise ValueError(f"{where(rows[i], i)}: column {col!r} {what}")

    def _token_ids(self, rows: Sequence[dict], texts: Sequence[str], prompt: bool) -> list:  # (index, ids) pairs; not element-typed: one per row
        """(index, token ids) of each text, tokenised in two batches: prompts rendered by a chat
        template get no added special tokens (the template wrote them), other prompts do."""
        out = []
        for chat in (False, True):
            idx = [i for i, r in enumerate(rows) if (CHAT in r) == chat]
            if idx:
                ids = self.tokenizer([texts[i] for i in idx], add_special_tokens=prompt and not chat).input_ids
                out += list(zip(idx, ids))
        return out

    def prompt(self, row: dict) -> list[int]:
        """Token ids of a row's prompt (checked against the limit)."""
        text = row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"row {row!r:.80}: column 'prompt' must be a non-empty string")
        ids = self.tokenizer(text, add_special_tokens=CHAT not in row).input_ids  # a chat template wrote its own
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(f"row {text!r:.60}: column 'prompt' has {len(ids)} tokens, over max_prompt_tokens={self.max_prompt_tokens}")
        return ids

    def completion(self, text: str, column: str = "completion") -> list[int]:
        """Token ids of a completion with eos appended (an error if over the limit)."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        if len(ids) > self.max_completion_tokens:
            raise ValueError(f"column {column!r} of {text!r:.60} has {len(ids)} tokens with eos, over max_completion_tokens="
                             f"{self.max_completion_tokens} (raise max_new_tokens)")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens skipped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
