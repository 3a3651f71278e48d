"""KTO's data (Ethayarajh et al. 2024; TRL ``KTOTrainer``): unpaired rows, each desirable or
undesirable (``Rollout.chosen``), and beside them one mismatched row per labelled row for the
reference point z0 (``Rollout.kl_sample``): row i's question with row i-1's completion, the
first row's with the last one's -- TRL's ``KL_completion_ids = [completion_ids[-1]] +
completion_ids[:-1]`` within a batch. A labelled row and its mismatched row share a group id, so
a micro-batch or rank split never separates them.

* :class:`UnpairedSource` -- samples of the frozen starting policy, judged by the run's reward:
  desirable when correct (reward > 0.5), undesirable when wrong, left out when unscored;
* :class:`UnpairedPreferenceSource` -- a chosen/rejected dataset unpaired as TRL's
  ``unpair_preference_dataset`` does (the chosen answer desirable, the rejected one not).
"""

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..protocols import DataSource
from ..rollout import Rollout, Sample
from .collate import to_rollout
from .encoder import Encoder
from .sources import RowCursor, SampledSource, _device


def with_mismatched(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], desirable: Sequence[bool], *,
                    pad_id: int, texts: Sequence[Sample], device: "torch.device | str" = "cpu", temperature: float = 1.0) -> Rollout:
    """The labelled rows, then their mismatched rows (see the module docstring)."""
    n = len(prompt_ids)
    if n < 2:
        raise ValueError(f"KTO: a batch needs at least 2 labelled rows to mismatch completions (TRL's rule too), got {n}")
    shifted = [completion_ids[-1]] + list(completion_ids[:-1])
    shifted_texts = [Sample(t.prompt, s.completion, t.columns) for t, s in zip(texts, [texts[-1]] + list(texts[:-1]))]
    out = to_rollout(list(prompt_ids) * 2, list(completion_ids) + shifted, pad_id=pad_id, group_ids=list(range(n)) * 2,
                     texts=list(texts) + shifted_texts, device=device, temperature=temperature)
    kl = torch.arange(2 * n, device=out.input_ids.device) >= n
    chosen = torch.tensor(list(desirable) + [False] * n, dtype=torch.bool, device=out.input_ids.device)
    return out.replace(chosen=chosen, kl_sample=kl)


def _tokens(rollout: Rollout, row: int) -> tuple[list[int], list[int]]:
    ids, comp, attn = rollout.input_ids[row], rollout.completion_mask[row], rollout.attention_mask[row]
    real = attn.nonzero().squeeze(1)
    first = int(comp.nonzero()[0, 0]) if bool(comp.any()) else int(real[-1]) + 1
    prompt = ids[real[real < first]].tolist()
    return prompt, ids[comp].tolist()


class UnpairedSource(DataSource):
    """KTO rows from the frozen starting policy: every scored sample of ``samples_per_question`` per
    question is a labelled row (desirable when its reward is > 0.5); unscored samples are left out,
    never labelled. Draws more questions (up to ``max_draws`` rounds) until ``n`` questions gave at
    least one scored sample and there are 2 rows or more."""

    def __init__(self, sampled: SampledSource, judge: Callable[[Rollout, Sequence[Sample]], Rollout], max_draws: int = 4):
        if sampled.online:
            raise ValueError("UnpairedSource: KTO's rows are sampled offline; give SampledSource a frozen model")
        self.sampled, self.judge, self.max_draws = sampled, judge, max_draws
        self._left_out = 0

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        prompts, completions, labels, texts, questions, self._left_out = [], [], [], [], 0, 0
        for _ in range(self.max_draws):
            scored = self.judge(r := self.sampled.sample(policy, max(1, n - questions)), r.texts)  # 1 more: still under 2 rows
            known = scored.scored if scored.scored is not None else torch.ones_like(scored.rewards, dtype=torch.bool)
            self._left_out += int((~known).sum())
            questions += len({int(g) for g, k in zip(scored.group_ids, known) if bool(k)})
            for i in known.nonzero().squeeze(1).tolist():
                p, c = _tokens(scored, i)
                prompts.append(p)
                completions.append(c)
                texts.append(scored.texts[i])
                labels.append(bool(scored.rewards[i] > 0.5))
            if questions >= n and len(prompts) >= 2:
                break
        if len(prompts) < 2:
            raise ValueError(f"UnpairedSource: fewer than 2 scored samples in {self.max_draws} draws; KTO needs 2 or more per batch")
        return with_mismatched(prompts, completions, labels, pad_id=self.sampled.encoder.tokenizer.pad_token_id, texts=texts,
                               device=_device(policy), temperature=self.sampled.temperature)

    def metrics(self) -> dict[str, float]:
        """``kto/unscored``: samples of the last step left out because the reward could not score them."""
        return {"kto/unscored": float(self._left_out)}

    def state_dict(self) -> dict:
        return self.sampled.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampled.load_state_dict(state)


class UnpairedPreferenceSource(DataSource):
    """A chosen/rejected dataset (columns ``prompt``, ``chosen``, ``rejected``) as KTO rows: each pair
    gives its chosen answer (desirable) then its rejected one, in TRL's ``unpair_preference_dataset``
    order; ``n`` pairs make 2n labelled rows."""

    def __init__(self, rows: Sequence[dict], encoder: Encoder, seed: int = 0):
        self.cursor, self.encoder = RowCursor(rows, seed), encoder
        encoder.check(self.cursor.rows, ("prompt", "chosen", "rejected"))

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        prompts, completions, labels, texts = [], [], [], []
        for r in self.cursor.take(n):
            for col in ("chosen", "rejected"):
                prompts.append(self.encoder.prompt(r))
                completions.append(self.encoder.completion(r[col], col))
                labels.append(col == "chosen")
                texts.append(Sample(r["prompt"], r[col], r))
        return with_mismatched(prompts, completions, labels, pad_id=self.encoder.tokenizer.pad_token_id, texts=texts, device=_device(policy))

    def state_dict(self) -> dict:
        return {"position": self.cursor.position}

    def load_state_dict(self, state: dict) -> None:
        self.cursor.position = int(state["position"])
