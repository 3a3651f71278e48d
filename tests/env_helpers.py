"""Environments and a model for the multi-turn tests: a tiny Llama whose head favours eos a little
(so its random turns end, as an instruct model's do), ChatML characters with Qwen2.5's real chat
template (shipped in TRL), and environments that behave -- or misbehave -- on purpose."""

import time

import torch
from torch import nn

from unified_rl.apps.tasks import chat_tokenizer
from unified_rl.environments import Environment, Reply
from unified_rl.hf import tiny_llama
from helpers import exact_norms


def qwen_tokenizer():
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = chat_tokenizer()
    tok.chat_template = qwen2_5_chat_template
    return tok


def eos_model(tok, seed=0, eos_bias=4.0, dtype=torch.float32):
    """tiny_llama with a head bias that makes eos likely at every position (about 1 token in 6)."""
    model = tiny_llama(len(tok), max_positions=1024, seed=seed)
    head = nn.Linear(model.lm_head.in_features, len(tok), bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = eos_bias
    model.lm_head = head
    return exact_norms(model.to(dtype)) if dtype == torch.float64 else model


class Talk(Environment):
    """Replies to every turn with a user message whose length depends on the turn and the row (very
    different lengths), a per-turn reward, and ends after ``turns`` turns with a reward from the row."""

    turns = 3

    def reset(self, row):
        self.row, self.n = row, 0
        return None

    def step(self, turn):
        self.n += 1
        if self.n >= self.turns:
            return Reply(done=True, reward=0.25 * self.n)
        words = 1 + (7 * self.n + len(self.row["prompt"])) % 11
        return Reply(messages=[{"role": "user", "content": "more " * words}], reward=0.1 * self.n)

    def reward(self):
        return float(len(self.row["prompt"]) % 3) + 0.5 * self.n


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


class ToolTalk(Talk):
    """:class:`Talk` with a tool in its prompt, answering every turn with ``tool`` messages."""

    tools = (add,)

    def step(self, turn):
        reply = super().step(turn)
        if reply.done:
            return reply
        return Reply(messages=[{"role": "tool", "name": "add", "content": m["content"]} for m in reply.messages], reward=reply.reward)


class Raises(Talk):
    where = "step"

    def reset(self, row):
        if self.where == "reset":
            raise RuntimeError("reset broke")
        return super().reset(row)

    def step(self, turn):
        if self.where == "step":
            raise RuntimeError("step broke")
        return super().step(turn)

    def reward(self):
        if self.where == "reward":
            raise RuntimeError("reward broke")
        return super().reward()


class Hangs(Talk):
    def step(self, turn):
        time.sleep(30)


class Huge(Talk):
    def step(self, turn):
        return Reply(text="x" * 5000)


class NonText(Talk):
    def step(self, turn):
        return Reply(messages=[{"role": "user", "content": {"an": "object"}}])


class NeverEnds(Talk):
    def step(self, turn):
        return Reply(messages=[{"role": "user", "content": "go on"}])


class NaNReward(Talk):
    def reward(self):
        return float("nan")
