"""Tools as Python functions (TRL's ``tools=`` and ``environment_factory`` conventions): the model
calls them in the chat template's own format, Hermes / Qwen ``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>``; each result goes back as a ``tool`` message. A malformed call, an unknown tool
or a tool that raises becomes an error observation the model sees (``{"error": ...}``, as TRL
feeds back) and a metric, never a crash. A turn without a call is the final answer: the episode ends."""

import json
import re
from typing import Any, Callable, Optional, Sequence

from .protocol import Environment, Reply, Turn

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def hermes_calls(text: str) -> list:
    """The calls in ``text``: ``(name, arguments)`` for each well-formed ``<tool_call>`` block, or an
    error string for a malformed one (bad JSON, no name, arguments not an object); an opened block
    that is never closed is malformed too."""
    out: list = []
    for body in _CALL.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError as e:
            out.append(f"malformed tool call (not JSON: {e.msg})")
            continue
        args = call.get("arguments", {}) if isinstance(call, dict) else None
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(args, dict):
            out.append("malformed tool call (expected {\"name\": str, \"arguments\": object})")
            continue
        out.append((call["name"], args))
    if text.count("<tool_call>") > text.count("</tool_call>"):
        out.append("malformed tool call (<tool_call> is never closed)")
    return out


class Tools(Environment):
    """An episode with ``tools`` (Python functions): each turn's calls are run and answered with
    ``tool`` messages, until a turn makes none. ``reward(row, turns)`` scores the episode from the
    row and the model's turn texts (None: unscored); ``parse`` reads the calls from a turn's text
    (Hermes by default); ``on_reset(row)``: what :meth:`reset` returns (TRL's ``reset``)."""

    def __init__(self, tools: Sequence[Callable], reward: Callable[[dict, list[str]], Optional[float]],
                 parse: Callable[[str], list] = hermes_calls, on_reset: Optional[Callable[[dict], Optional[str]]] = None):
        self.tools, self._reward, self.parse, self.on_reset = list(tools), reward, parse, on_reset
        self._by_name = {fn.__name__: fn for fn in self.tools}
        self.row: dict = {}
        self.turns: list[str] = []

    def reset(self, row: dict) -> Optional[str]:
        self.row, self.turns = row, []
        return self.on_reset(row) if self.on_reset is not None else None

    def step(self, turn: Turn) -> Reply:
        self.turns.append(turn.text)
        calls = self.parse(turn.text)
        if not calls:
            return Reply(done=True)
        messages, errors = [], 0
        for call in calls:
            if isinstance(call, str):
                name, result = "error", {"error": call}
            else:
                name, args = call
                result = self._run(name, args)
            errors += isinstance(result, dict) and "error" in result
            messages.append({"role": "tool", "name": name, "content": result if isinstance(result, str) else json.dumps(result)})
        return Reply(messages=messages, info={"tool_calls": len(calls), "tool_errors": errors})

    def _run(self, name: str, args: dict) -> Any:
        fn = self._by_name.get(name)
        if fn is None:
            return {"error": f"Tool {name} not found."}
        try:
            return str(fn(**args))
        except Exception as e:  # a tool that raises is the model's observation, as in TRL
            return {"error": str(e)}

    def reward(self) -> Optional[float]:
        return self._reward(self.row, self.turns)


def from_trl(factory: Callable[[], Any]) -> Callable[[], Tools]:
    """A factory of :class:`Tools` from TRL's ``environment_factory``: an object whose public
    methods (other than ``reset`` and ``get_reward``) are its tools, ``reset(**row)`` starts it
    (a string is appended to the prompt) and ``get_reward()`` scores the episode."""

    def make() -> Tools:
        env = factory()
        names = [n for n in dir(env) if not n.startswith("_") and n not in ("reset", "get_reward") and callable(getattr(env, n))]
        return Tools([getattr(env, n) for n in names], reward=lambda row, turns: env.get_reward() if hasattr(env, "get_reward") else None,
                     on_reset=lambda row: env.reset(**row))

    return make
