"""The multi-turn producer's data source: G episodes per question, each alternating a model turn
(sampled, token-in / token-out) with its environment's reply, every environment call guarded.

Turn k+1's prompt is exactly turn k's ids plus the environment's tokens. Model tokens have
``completion_mask`` 1; the environment's, the tools' and the template's 0. An episode cut by a
limit (turns, total tokens, a turn cut at ``max_new_tokens``) is ``truncated``; one whose
environment raised, hung, or answered what cannot be used is left unscored (never a 0), named in
a warning and counted (``env/errors``, ``env/timeouts``), and training goes on.
"""

import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..data.encoder import Encoder
from ..data.row import where
from ..data.sources import RowCursor, _device
from ..protocols import DataSource, Sampler, conforms
from ..rewards.combine import scored
from ..rollout import Rollout, Sample
from .calls import Failure, guarded
from .episode import Episode, layout, number
from .protocol import Environment, EnvironmentFactory, Reply, Turn
from .render import Renderer


@dataclass(frozen=True)
class Limits:
    """An episode's limits: ``max_turns`` model turns; ``max_tokens`` tokens after the prompt, the
    model's and the environment's together (TRL's ``max_completion_length``); one reply at most
    ``max_observation_tokens``; each environment call at most ``timeout_s`` seconds (None: called on
    the sampling thread without a limit, for environments that need the main thread)."""

    max_turns: int = 4
    max_tokens: int = 256
    max_observation_tokens: int = 128
    timeout_s: Optional[float] = 30.0

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_tokens", "max_observation_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Limits: {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"Limits: timeout_s must be > 0 or None, got {self.timeout_s!r}")


class EpisodeSource(DataSource):
    """``samples_per_question`` episodes per question with a fresh environment from ``environment``
    (a factory) each; the model's turns drawn by ``sampler`` from the policy (online) at
    ``temperature``, at most ``max_new_tokens`` per turn. Rewards come from the environments:
    the final one per episode (``rewards``, ``scored``), per-turn ones at each turn's last model
    token (``step_rewards``, ``step_mask``)."""

    def __init__(self, rows: Sequence[dict], encoder: Encoder, sampler: Sampler, environment: EnvironmentFactory, *,
                 samples_per_question: int = 1, max_new_tokens: int = 64, temperature: float = 1.0, seed: int = 0,
                 limits: Limits = Limits()):
        if samples_per_question < 1:
            raise ValueError(f"EpisodeSource: samples_per_question must be >= 1, got {samples_per_question}")
        if not callable(environment):
            raise TypeError(f"EpisodeSource: environment must be a factory (a callable that makes one episode's environment), "
                            f"got {type(environment).__name__}")
        probe = environment()
        conforms(probe, Environment, "environment")
        self.cursor, self.encoder, self.sampler, self.make = RowCursor(rows, seed), encoder, sampler, environment
        encoder.check(self.cursor.rows, ("prompt",))
        self.renderer = Renderer(encoder.tokenizer, probe.tools)
        self.group_size, self.max_new_tokens, self.temperature, self.limits = samples_per_question, max_new_tokens, temperature, limits
        self.generator = torch.Generator().manual_seed(seed)
        self.eos = encoder.tokenizer.eos_token_id
        self._metrics: dict[str, float] = {}

    online = True

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        """``n`` questions' episodes as one rollout (see the class)."""
        if policy is None:
            raise ValueError("EpisodeSource.sample: episodes are sampled from the policy, which was not given")
        if not self.temperature > 0:
            raise ValueError("EpisodeSource.sample: a rollout to train on is sampled at a temperature > 0 (0 is for run(): greedy episodes)")
        return self._rollout(self.run(policy, self.cursor.take(n)), _device(policy))

    def run(self, policy: nn.Module, rows: Sequence[dict]) -> list:
        """The :class:`~unified_rl.environments.episode.Episode` s of ``rows`` (G each), played to their
        end and scored; ``temperature=0`` plays them greedily (evaluation)."""
        counts, t_env = Counter(), 0.0
        t0 = time.perf_counter()
        episodes = [self._start(row, q, counts) for q, row in enumerate(rows) for _ in range(self.group_size)]
        t_env += time.perf_counter() - t0
        for k in range(self.limits.max_turns):
            live = [e for e in episodes if e.live]
            if not live:
                break
            self._model_turn(policy, live, first=k == 0 and len(live) == len(episodes))
            t1 = time.perf_counter()
            for e in live:
                if e.live:
                    self._reply(e, counts)
            t_env += time.perf_counter() - t1
        t2 = time.perf_counter()
        for e in episodes:
            if e.live:  # still going after max_turns: cut by the turn limit
                e.live, e.truncated = False, True
            if e.failure is None:
                self._final_reward(e)
            if e.failure is not None:
                counts["timeouts" if e.failure_kind == "timeout" else "errors"] += 1
                warnings.warn(f"environment {type(e.env).__name__}, {where(e.row, e.question)}: {e.failure}; the episode is left "
                              "unscored and training goes on", stacklevel=2)
        t_env += time.perf_counter() - t2
        self._metrics = self._summary(episodes, counts, t_env)
        return episodes

    def _start(self, row: dict, question: int, counts: Counter) -> Episode:
        env = self.make()
        e = Episode(row, question, env)
        try:
            extra = guarded(env.reset, row, timeout_s=self.limits.timeout_s, what="reset")
            if extra is not None and not isinstance(extra, str):
                raise Failure("error", f"reset returned {type(extra).__name__}, expected a string or None")
        except Failure as f:
            e.ids = self.encoder.prompt(row)
            e.prompt_len = len(e.ids)
            e.fail(f.kind, str(f))
            return e
        e.ids = self.renderer.prompt(row, extra)
        e.prompt_len = len(e.ids)
        return e

    def _model_turn(self, policy: nn.Module, live: list, first: bool) -> None:
        """One turn of every live episode, sampled in one batch (on the first turn, a question's G
        episodes share their prompt when it is the same, so the sampler shares its prefix)."""
        budgets = [self.limits.max_tokens - e.used for e in live]
        g = self.group_size
        shared = first and g > 1 and all(live[i].ids == live[i + j].ids for i in range(0, len(live), g) for j in range(g))
        prompts = [e.ids for e in live[::g]] if shared else [e.ids for e in live]
        gen = self.sampler.sample(policy, prompts, g if shared else 1, min(self.max_new_tokens, max(budgets)), self.temperature, self.generator)
        for e, budget, ids, lp in zip(live, budgets, gen.completion_ids, gen.logprobs):
            ids, lp = list(ids)[:budget], lp.tolist()[: budget]
            e.add(ids, lp)
            e.turns += 1
            if not ids or ids[-1] != self.eos:  # cut by max_new_tokens or the token budget: the episode ends here
                e.live, e.truncated = False, True

    def _reply(self, e: Episode, counts: Counter) -> None:
        """The environment's answer to the episode's last turn, appended to its ids (or the episode ends)."""
        turn_ids = tuple(e.ids[len(e.ids) - self._last_turn_length(e):])
        turn = Turn(self.encoder.decode(turn_ids), turn_ids, e.turns - 1)
        try:
            reply = guarded(e.env.step, turn, timeout_s=self.limits.timeout_s, what="step")
            ids = self._reply_ids(reply)
        except Failure as f:
            e.fail(f.kind, str(f))
            return
        for key, value in reply.info.items():
            counts[key] += number(value) or 0
        if reply.reward is not None:
            e.turn_rewards[len(e.ids) - 1] = reply.reward
        if reply.done:
            e.live = False
        elif ids is not None and e.used + len(ids) >= self.limits.max_tokens:  # no room for the reply and another turn
            e.live, e.truncated = False, True
        elif ids is not None:
            e.add(ids)

    def _reply_ids(self, reply: Any) -> Optional[list]:
        """The ids a reply adds (None when it ends the episode); a Failure for what cannot be used."""
        if not isinstance(reply, Reply):
            raise Failure("error", f"step returned {type(reply).__name__}, expected a Reply")
        if reply.reward is not None and number(reply.reward) is None:
            raise Failure("error", f"step returned the per-turn reward {reply.reward!r}, expected a finite number or None")
        if reply.done:
            return None
        given = [x is not None for x in (reply.messages, reply.text, reply.token_ids)]
        if sum(given) != 1:
            raise Failure("error", "step returned a Reply that is not done with "
                          f"{'none' if not any(given) else 'more than one'} of messages, text and token_ids")
        if reply.text is not None and not isinstance(reply.text, str):
            raise Failure("error", f"step returned non-text ({type(reply.text).__name__}) as the reply's text")
        if reply.messages is not None and not all(isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
                                                  for m in reply.messages):
            raise Failure("error", "step returned messages that are not {'role': str, 'content': str} (non-text observation)")
        if reply.token_ids is not None and not all(isinstance(t, int) and 0 <= t < len(self.encoder.tokenizer) for t in reply.token_ids):
            raise Failure("error", "step returned token ids that are not ids of this tokenizer")
        try:
            ids = self.renderer.reply(reply.messages, reply.text, reply.token_ids)
        except Exception as e:  # a template that refuses the reply
            raise Failure("error", f"the reply cannot be rendered ({type(e).__name__}: {e})") from None
        if len(ids) > self.limits.max_observation_tokens:
            raise Failure("error", f"step returned an observation of {len(ids)} tokens, over max_observation_tokens="
                          f"{self.limits.max_observation_tokens}")
        return ids

    @staticmethod
    def _last_turn_length(e: Episode) -> int:
        k = len(e.model)
        while k > 0 and e.model[k - 1]:
            k -= 1
        return len(e.model) - k

    def _final_reward(self, e: Episode) -> None:
        try:
            value = guarded(e.env.reward, timeout_s=self.limits.timeout_s, what="reward")
        except Failure as f:
            e.fail(f.kind, str(f))
            return
        if value is not None and number(value) is None:
            e.fail("error", f"reward returned {value!r}, expected a finite number or None")
        e.reward = number(value)

    def _summary(self, episodes: list, counts: Counter, t_env: float) -> dict[str, float]:
        n = len(episodes)
        model = sum(sum(e.model) for e in episodes)
        every = sum(e.used for e in episodes)
        return {"env/turns": sum(e.turns for e in episodes) / n, "env/errors": float(counts["errors"]),
                "env/timeouts": float(counts["timeouts"]), "env/truncated": sum(e.truncated for e in episodes) / n,
                "env/model_token_share": model / max(every, 1), "env/tool_calls": float(counts["tool_calls"]),
                "env/tool_errors": float(counts["tool_errors"]), "time/environment": t_env}

    def _rollout(self, episodes: list, device: torch.device) -> Rollout:
        """Right-padded rows [prompt | turn | reply | turn ... | pad]; completion_mask on the model's tokens."""
        ids, attn, comp = layout(episodes, self.encoder.tokenizer.pad_token_id)
        lp = torch.zeros(ids.shape, dtype=torch.float32)
        step_r, step_m = torch.zeros(ids.shape, dtype=torch.float32), torch.zeros(ids.shape, dtype=torch.bool)
        for i, e in enumerate(episodes):
            lp[i, e.prompt_len: len(e.ids)] = torch.tensor(e.logprobs, dtype=torch.float32)
            for pos, r in e.turn_rewards.items():
                step_r[i, pos], step_m[i, pos] = float(r), e.failure is None
        texts = [Sample(e.row["prompt"] if isinstance(e.row["prompt"], str) else self.encoder.decode(e.ids[: e.prompt_len]),
                        self.encoder.decode(e.ids[e.prompt_len:]), e.row) for e in episodes]
        fields = {"sampler_logprobs": lp} if not self.sampler.exact else {"sampler_logprobs": lp, "old_logprobs": lp.clone()}
        if bool(step_m.any()):
            fields.update(step_rewards=step_r, step_mask=step_m)
        rollout = Rollout(ids, attn, comp, group_ids=torch.tensor([e.question for e in episodes]), texts=tuple(texts),
                          truncated=torch.tensor([e.truncated for e in episodes]), temperature=self.temperature, **fields).to(device)
        return scored(rollout, texts, [e.reward for e in episodes], "environment")

    def metrics(self) -> dict[str, float]:
        """``env/...`` of the last :meth:`sample` (docs/environments.md) and ``time/environment``."""
        return dict(self._metrics)

    def state_dict(self) -> dict:
        return {"position": self.cursor.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])
        self.generator.set_state(state["generator"])
