"""Online DPO's pairs (Guo et al. 2024; TRL ``experimental.online_dpo.OnlineDPOTrainer``): two
samples per question from the **current** policy, scored by the run's reward; the first is chosen
when its reward is at least the second's (TRL's rule: ``first >= second``, so a tie goes to the
first). A pair with an unscored sample is left out (never ranked as if it scored 0), and more
questions are drawn, up to ``max_draws`` rounds."""

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..protocols import DataSource
from ..rollout import Rollout, Sample
from .collate import concat
from .sources import SampledSource


def rank_pairs(scored: Rollout) -> tuple[list[Rollout], int]:
    """Each group of two scored samples as a pair with ``chosen`` set by TRL's rule (the first when
    its reward is >= the second's), in group order; and how many groups were left out because a
    sample was not scored."""
    known = scored.scored if scored.scored is not None else torch.ones_like(scored.rewards, dtype=torch.bool)
    pairs, dropped = [], 0
    for g in scored.group_ids.unique().tolist():
        first, second = (scored.group_ids == g).nonzero().squeeze(1).tolist()
        if not (bool(known[first]) and bool(known[second])):
            dropped += 1
            continue
        first_wins = bool(scored.rewards[first] >= scored.rewards[second])
        pairs.append(scored.select([first, second]).replace(chosen=torch.tensor([first_wins, not first_wins], device=scored.input_ids.device)))
    return pairs, dropped


class RankedPairSource(DataSource):
    """Pairs ranked by reward from ``sampled`` (online, two samples per question); see the module docstring."""

    def __init__(self, sampled: SampledSource, judge: Callable[[Rollout, Sequence[Sample]], Rollout], max_draws: int = 4):
        if not sampled.online or sampled.group_size != 2:
            raise ValueError("RankedPairSource: online DPO ranks two samples of the current policy per question "
                             "(SampledSource(..., samples_per_question=2) with no frozen model)")
        self.sampled, self.judge, self.max_draws = sampled, judge, max_draws
        self._dropped = 0

    def sample(self, policy: Optional[nn.Module], n: int) -> Rollout:
        parts, self._dropped = [], 0
        for _ in range(self.max_draws):
            r = self.sampled.sample(policy, n)
            pairs, dropped = rank_pairs(self.judge(r, r.texts))
            parts += pairs[: n - len(parts)]
            self._dropped += dropped
            if len(parts) >= n:
                break
        if not parts:
            raise ValueError(f"RankedPairSource: no question had both samples scored in {self.max_draws} draws")
        dev = parts[0].input_ids.device
        parts = [p.replace(group_ids=torch.full((2,), i, dtype=torch.long, device=dev)) for i, p in enumerate(parts)]
        return concat(parts, pad_id=self.sampled.encoder.tokenizer.pad_token_id)

    def metrics(self) -> dict[str, float]:
        """``pairs/unscored``: pairs of the last step left out because a sample was not scored."""
        return {"pairs/unscored": float(self._dropped)}

    def state_dict(self) -> dict:
        return self.sampled.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampled.load_state_dict(state)
