"""One episode's record: the tokens the model was conditioned on, which of them it produced, its
log-probs and per-turn rewards, and how the episode ended (done, cut by a limit, or failed)."""

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor


def number(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None when it is not one (bool, NaN, inf, a string ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Episode:
    """An episode in progress: ``ids`` is exactly what the model saw, prompt first; ``model[k]``
    marks whether ``ids[prompt_len + k]`` was sampled by the model (1) or came from the environment
    or the template (0)."""

    row: dict
    question: int
    env: Any
    ids: list = field(default_factory=list)
    prompt_len: int = 0
    model: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    turn_rewards: dict = field(default_factory=dict)  # position in ids -> reward at that turn's last model token
    turns: int = 0
    live: bool = True
    truncated: bool = False
    failure: Optional[str] = None  # why the environment could not be trusted with this episode (then unscored)
    failure_kind: str = ""  # "error" or "timeout"
    reward: Optional[float] = None

    @property
    def used(self) -> int:
        """Tokens after the prompt so far (model and environment)."""
        return len(self.ids) - self.prompt_len

    def add(self, ids: list, logprobs: Optional[list] = None) -> None:
        """Append tokens: the model's (with their log-probs) or, without log-probs, the environment's."""
        self.ids += ids
        self.model += [logprobs is not None] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)

    def fail(self, kind: str, why: str) -> None:
        """End the episode unscored: the environment raised, hung or answered what cannot be used."""
        self.live, self.failure, self.failure_kind = False, why, kind


def layout(episodes: Sequence[Episode], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, completion_mask) of right-padded rows [prompt | turn | reply | turn ...
    | pad], ``completion_mask`` on the model's tokens: the one layout of sampled and supervised episodes."""
    b, width = len(episodes), max(len(e.ids) for e in episodes)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attn, comp = torch.zeros((b, width), dtype=torch.bool), torch.zeros((b, width), dtype=torch.bool)
    for i, e in enumerate(episodes):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        attn[i, : len(e.ids)] = True
        comp[i, e.prompt_len: len(e.ids)] = torch.tensor(e.model, dtype=torch.bool)
    return ids, attn, comp
