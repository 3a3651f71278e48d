"""The :class:`Environment` protocol: what a multi-turn episode talks to.

An episode starts from a data row (:meth:`Environment.reset`), then alternates a model turn
(:class:`Turn`: its text and token ids) with the environment's :class:`Reply` (chat messages, plain
text or token ids, an optional per-turn reward, and whether the episode is done); the final
reward is read at the end (:meth:`Environment.reward`). It follows the field's conventions: TRL's
``environment_factory`` (``reset(**row) -> str | None`` appended to the prompt, ``get_reward()``),
OpenEnv's ``step(action) -> (observation, reward, done)``. The environment's tokens are context,
not output: their ``completion_mask`` is 0, so their GC is 0 and no normaliser counts them.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Turn:
    """One model turn: its decoded ``text`` (special tokens skipped), the exact ``token_ids`` the
    model sampled (ending in eos) and its index in the episode (0 for the first)."""

    text: str
    token_ids: tuple
    index: int


@dataclass(frozen=True)
class Reply:
    """What the environment answers a turn with: at most one of ``messages`` (chat messages, e.g.
    ``{"role": "tool", "name": ..., "content": ...}``, rendered with the tokenizer's chat template),
    ``text`` (appended as it is tokenised) or ``token_ids`` (appended as they are); ``reward``:
    a per-turn reward, placed at the turn's last model token (process supervision); ``done``: the
    episode ends here (what the reply says is then not shown to the model)."""

    messages: Optional[Sequence[dict]] = None
    text: Optional[str] = None
    token_ids: Optional[Sequence[int]] = None
    reward: Optional[float] = None
    done: bool = False
    info: dict = field(default_factory=dict)  # counters the environment reports (e.g. tool_calls, tool_errors), summed into metrics


@runtime_checkable
class Environment(Protocol):
    """One episode's environment, made fresh for each episode by a factory (no shared state between
    episodes). ``tools``: Python functions the model may call, rendered into the prompt with the
    tokenizer's chat template (``tools=``); each needs type hints and a docstring with its arguments
    (transformers' ``get_json_schema`` reads them). Subclass to inherit the optional defaults."""

    tools: Sequence[Callable] = ()

    def reset(self, row: dict) -> Optional[str]:
        """Start an episode on ``row``; a string is appended to the prompt (to the last user message
        in a chat), None leaves it as it is."""
        return None

    def step(self, turn: Turn) -> Reply:
        """The reply to the model's ``turn``."""
        ...

    def reward(self) -> Optional[float]:
        """The episode's final reward, read once it ends; None: the episode cannot be scored (it is
        left out of every baseline, never counted as 0)."""
        return None


EnvironmentFactory = Callable[[], Any]
