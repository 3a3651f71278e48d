"""Data sources: where (q, o) comes from. Each is a ``DataSource``: ``sample(policy, n) -> Rollout``
and a ``state_dict`` (data position and RNG) so a resumed run draws exactly the same data.

* :class:`SupervisedSource` -- (q, o) pairs from a dataset (SFT);
* :class:`SampledSource`    -- G samples per question from a **frozen** model (offline: RFT) or
  from the **current** policy (online: Online RFT, PPO, GRPO groups);
* :class:`PairSource`       -- DPO pairs as in the paper: o+ correct and o- wrong, sampled from pi_sft;
* :class:`PreferenceSource` -- chosen/rejected pairs from a dataset.
"""

from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..protocols import DataSource, Sampler
from ..rollout import Rollout, Sample
from .collate import concat, to_rollout
from .encoder import Encoder


class RowCursor:
    """Deterministic epoch-shuffled pass over rows; its state is one integer."""

    def __init__(self, rows: Sequence[dict], seed: int = 0, shuffle: bool = True):
        if not rows:
            raise ValueError("data source: zero rows")
        self.rows, self.seed, self.shuffle, self.position = list(rows), seed, shuffle, 0
        self._perm: tuple[int, Optional[list[int]]] = (-1, None)

    def take(self, n: int) -> list[dict]:
        """The next ``n`` rows (a new shuffle each epoch)."""
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.rows))
            if self._perm[0] != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm = (epoch, torch.randperm(len(self.rows), generator=g).tolist() if self.shuffle else list(range(len(self.rows))))
            out.append(self.rows[self._perm[1][i]])
            self.position += 1
        return out


def _device(policy: Optional[nn.Module]) -> torch.device:
    return next(policy.parameters()).device if policy is not None else torch.device("cpu")


class SupervisedSource(DataSource):
    """SFT data: each row's reference completion (column ``completion``); every row is checked
    against the length limits when the source is built."""

    def __init__(self, rows: Sequence[dict], encoder: Encoder, seed: int = 0):
        self.cursor, self.encoder = RowCursor(rows, seed), encoder
        encoder.check(self.cursor.rows, ("prompt", "completion"))

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        rows = self.cursor.take(n)
        prompts = [self.encoder.prompt(r) for r in rows]
        completions = [self.encoder.completion(r["completion"]) for r in rows]
        texts = [Sample(r["prompt"], r["completion"], r) for r in rows]
        return to_rollout(prompts, completions, pad_id=self.encoder.tokenizer.pad_token_id, texts=texts, device=_device(policy))

    def state_dict(self) -> dict:
        return {"position": self.cursor.position}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])


class SampledSource(DataSource):
    """``samples_per_question`` completions per question, drawn by ``sampler`` from ``frozen``
    (offline) or the policy (online), at ``temperature`` (recorded on the rollout).

    The sampler's log-probs are recorded as ``sampler_logprobs``. When the sampler is ``exact`` (its
    log-probs are the model's own), they are also ``old_logprobs`` online (pi_old = the policy that
    sampled) and ``ref_logprobs`` offline (the frozen sampler is pi_sft = pi_ref); otherwise the
    Trainer recomputes pi_old, and a ``corrected`` term can weigh the mismatch.
    """

    def __init__(self, rows: Sequence[dict], encoder: Encoder, sampler: Sampler, *, samples_per_question: int = 1,
                 frozen: Optional[nn.Module] = None, max_new_tokens: int = 64, temperature: float = 1.0, seed: int = 0):
        if samples_per_question < 1:
            raise ValueError(f"samples_per_question must be >= 1, got {samples_per_question}")
        if not temperature > 0:
            raise ValueError(f"SampledSource: temperature must be > 0, got {temperature}")
        self.cursor, self.encoder, self.sampler = RowCursor(rows, seed), encoder, sampler
        encoder.check(self.cursor.rows, ("prompt",))
        self.group_size, self.frozen = samples_per_question, frozen
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.generator = torch.Generator().manual_seed(seed)
        if frozen is not None:
            frozen.requires_grad_(False).eval()

    @property
    def online(self) -> bool:
        return self.frozen is None

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        model = policy if self.online else self.frozen
        if model is None:
            raise ValueError("SampledSource.sample: an online source needs the policy")
        rows = self.cursor.take(n)
        prompts = [self.encoder.prompt(r) for r in rows]
        tok = self.encoder.tokenizer
        gen = self.sampler.sample(model, prompts, self.group_size, self.max_new_tokens, self.temperature, self.generator)
        expanded = [r for r in rows for _ in range(self.group_size)]
        texts = [Sample(r["prompt"], self.encoder.decode(c), r) for r, c in zip(expanded, gen.completion_ids)]
        groups = [i for i in range(len(rows)) for _ in range(self.group_size)]
        return to_rollout(gen.prompt_ids, gen.completion_ids, pad_id=tok.pad_token_id, logprobs=gen.logprobs,
                          logprob_field=self._logprob_fields(), group_ids=groups, texts=texts,
                          device=_device(policy if policy is not None else model), temperature=self.temperature, eos_id=tok.eos_token_id)

    def _logprob_fields(self) -> tuple[str, ...]:
        """Where the sampler's log-probs go: always ``sampler_logprobs``; also ``old_logprobs``
        (online) or ``ref_logprobs`` (offline, the frozen pi_sft) when the sampler is ``exact``."""
        if not self.sampler.exact:
            return ("sampler_logprobs",)
        return ("sampler_logprobs", "old_logprobs" if self.online else "ref_logprobs")

    def state_dict(self) -> dict:
        return {"position": self.cursor.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])
        self.generator.set_state(state["generator"])


class PairSource(DataSource):
    """DPO pairs from the frozen SFT model: for each question, one correct o+ and one wrong o-
    among ``samples_per_question`` samples (judged by ``judge``, a reward function); questions
    without both are skipped, and more are drawn (up to ``max_draws`` rounds)."""

    def __init__(self, sampled: SampledSource, judge: Callable[[Rollout, Sequence[Sample]], Rollout], max_draws: int = 8):
        if sampled.online:
            raise ValueError("PairSource: pairs are sampled offline; give SampledSource a frozen model")
        self.sampled, self.judge, self.max_draws = sampled, judge, max_draws

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        parts: list[Rollout] = []
        found = 0
        for _ in range(self.max_draws):
            scored = self.judge(r := self.sampled.sample(policy, n), r.texts)
            known = scored.scored if scored.scored is not None else torch.ones_like(scored.rewards, dtype=torch.bool)
            ok, wrong = known & (scored.rewards > 0.5), known & ~(scored.rewards > 0.5)  # unscored: neither o+ nor o-
            for g in scored.group_ids.unique().tolist():
                rows = (scored.group_ids == g).nonzero().squeeze(1)
                good, bad = rows[ok[rows]], rows[wrong[rows]]
                if len(good) and len(bad) and found < n:
                    pick = scored.select([int(good[0]), int(bad[0])])
                    parts.append(pick.replace(group_ids=torch.full((2,), found, dtype=torch.long, device=pick.input_ids.device),
                                              chosen=torch.tensor([True, False], device=pick.input_ids.device)))
                    found += 1
            if found >= n:
                break
        if not parts:
            raise ValueError(f"PairSource: no question gave both a correct and a wrong sample in {self.max_draws} draws")
        return concat(parts, pad_id=self.sampled.encoder.tokenizer.pad_token_id)

    def state_dict(self) -> dict:
        return self.sampled.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampled.load_state_dict(state)


class PreferenceSource(DataSource):
    """Chosen/rejected pairs from a dataset (columns ``prompt``, ``chosen``, ``rejected``), checked
    against the length limits when the source is built."""

    def __init__(self, rows: Sequence[dict], encoder: Encoder, seed: int = 0):
        self.cursor, self.encoder = RowCursor(rows, seed), encoder
        encoder.check(self.cursor.rows, ("prompt", "chosen", "rejected"))

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        rows = self.cursor.take(n)
        prompts, completions, texts, groups = [], [], [], []
        for i, r in enumerate(rows):
            p = self.encoder.prompt(r)
            for col in ("chosen", "rejected"):
                prompts.append(p)
                completions.append(self.encoder.completion(r[col], col))
                texts.append(Sample(r["prompt"], r[col], r))
                groups.append(i)
        out = to_rollout(prompts, completions, pad_id=self.encoder.tokenizer.pad_token_id, group_ids=groups, texts=texts, device=_device(policy))
        return out.replace(chosen=torch.arange(len(groups), device=out.input_ids.device) % 2 == 0)

    def state_dict(self) -> dict:
        return {"position": self.cursor.position}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])


class ReplaySource(DataSource):
    """Mixes a ``fraction`` of history into each batch: ``n - k`` fresh questions' rollouts from
    ``inner`` plus ``k = round(fraction * n)`` rows drawn from earlier batches (kept up to
    ``capacity`` rows). Meant for offline data and reward-model training: replayed samples are
    off-policy, so do not feed them to ratio-based coefficients that assume pi_old sampled them.
    """

    def __init__(self, inner: Any, fraction: float = 0.1, capacity: int = 10_000, seed: int = 0, pad_id: int = 0):
        if not 0 <= fraction < 1:
            raise ValueError(f"ReplaySource: fraction must be in [0, 1), got {fraction}")
        self.inner, self.fraction, self.capacity, self.pad_id = inner, fraction, capacity, pad_id
        self.history: list[Rollout] = []
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        k = min(int(round(self.fraction * n)), sum(h.batch_size for h in self.history))
        fresh = self.inner.sample(policy, n - k)
        parts = [fresh]
        if k:
            pool = concat(self.history, self.pad_id)
            pick = torch.randperm(pool.batch_size, generator=self.generator)[:k].tolist()
            old = pool.select(pick)
            offset = int(fresh.group_ids.max()) + 1 if fresh.group_ids is not None else 0
            parts.append(old.replace(group_ids=torch.arange(offset, offset + k, device=old.input_ids.device)))
        self.history.append(fresh)
        while sum(h.batch_size for h in self.history) > self.capacity and len(self.history) > 1:
            self.history.pop(0)
        return concat(parts, self.pad_id) if len(parts) > 1 else fresh
