"""Supervised episodes: SFT on worked multi-turn transcripts (a teacher's tool use), the model's
turns trained and the environment's tokens context -- the same layout the episode source samples."""

from typing import Optional, Sequence

import torch
from torch import nn

from ..data.encoder import Encoder
from ..data.row import where
from ..data.sources import RowCursor, _device
from ..protocols import DataSource
from ..rollout import Rollout, Sample
from .episode import Episode, layout


class SupervisedEpisodes(DataSource):
    """Rows with ``prompt`` and ``episode``: a list of texts alternating the model's turns and the
    environment's replies, model first (``["7*4=", "28;", "#28"]``). Each model turn is followed by
    eos (as a sampled turn ends) and has ``completion_mask`` 1; replies are tokenised as they are
    and have 0. Every row is checked when the source is built: an error names the row and the turn."""

    def __init__(self, rows: Sequence[dict], encoder: Encoder, seed: int = 0):
        self.cursor, self.encoder = RowCursor(rows, seed), encoder
        encoder.check(self.cursor.rows, ("prompt",))
        for i, row in enumerate(self.cursor.rows):
            turns = row.get("episode")
            if not isinstance(turns, list) or len(turns) % 2 == 0 or not all(isinstance(t, str) for t in turns):
                raise ValueError(f"{where(row, i)}: column 'episode' must be a list of texts alternating model turns and replies, "
                                 "starting and ending with a model turn")
            if sum(len(self._ids(turns, k)) for k in range(len(turns))) > encoder.max_completion_tokens * (len(turns) // 2 + 1):
                raise ValueError(f"{where(row, i)}: column 'episode' is longer than max_completion_tokens per model turn")

    def _ids(self, turns: list, k: int) -> list:
        ids = self.encoder.tokenizer(turns[k], add_special_tokens=False).input_ids
        return ids + [self.encoder.tokenizer.eos_token_id] if k % 2 == 0 else ids

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        rows = self.cursor.take(n)
        episodes = []
        for q, r in enumerate(rows):
            prompt = self.encoder.prompt(r)
            e = Episode(r, q, None, ids=list(prompt), prompt_len=len(prompt))
            for k in range(len(r["episode"])):
                part = self._ids(r["episode"], k)
                e.add(part, [0.0] * len(part) if k % 2 == 0 else None)  # the model's turns (with log-probs), then replies
            episodes.append(e)
        ids, attn, comp = layout(episodes, self.encoder.tokenizer.pad_token_id)
        texts = [Sample(r["prompt"], "".join(r["episode"]), r) for r in rows]
        dev = _device(policy)
        return Rollout(ids.to(dev), attn.to(dev), comp.to(dev), group_ids=torch.arange(len(rows), device=dev), texts=tuple(texts))

    def state_dict(self) -> dict:
        return {"position": self.cursor.position}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])
