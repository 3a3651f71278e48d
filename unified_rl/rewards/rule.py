"""Rule-based rewards: exact, verifiable scores (outcome and process)."""

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from ..protocols import RewardFunction
from ..rollout import Rollout, Sample
from .answers import normalize_number


@dataclass
class OutcomeReward(RewardFunction):
    """r = 1 if ``extract(completion)`` equals the row's ``answer`` column (number-normalised), else 0.
    ``extract`` reads the answer out of a completion, e.g. ``AfterMarker("####")`` for GSM8K."""

    extract: Callable[[str], Optional[str]]
    column: str = "answer"

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        scores = []
        for i, s in enumerate(texts):
            if self.column not in s.columns:
                raise ValueError(f"OutcomeReward: sample {i} has no column {self.column!r} (has {sorted(s.columns)})")
            if s.columns[self.column] is None or not str(s.columns[self.column]).strip():
                raise ValueError(f"OutcomeReward: sample {i} (prompt {s.prompt!r:.60}) has an empty or null {self.column!r}; it cannot be scored")
            scores.append(float(self.extract(s.completion) == normalize_number(str(s.columns[self.column]))))
        return rollout.replace(rewards=torch.tensor(scores, dtype=torch.float32, device=rollout.input_ids.device))


def token_char_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """For each token, the length of the decoded text up to and including it."""
    return [len(tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True)) for k in range(len(ids))]


@dataclass
class ProcessReward(RewardFunction):
    """Process supervision: a reward at the last token of each reasoning step.

    ``checks(prompt, completion) -> [(last char index of step, correct?)]``; the step's reward
    (1 or 0) is placed at the token containing that character. ``rewards`` is set to the
    outcome (all steps correct) for logging.
    """

    tokenizer: Any
    checks: Callable[[str, str], list[tuple[int, bool]]]

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        step_rewards = torch.zeros(rollout.input_ids.shape, dtype=torch.float32)
        step_mask = torch.zeros(rollout.input_ids.shape, dtype=torch.bool)
        outcome = []
        comp = rollout.completion_mask.cpu()
        ids = rollout.input_ids.cpu()
        for i, s in enumerate(texts):
            positions = comp[i].nonzero().squeeze(1).tolist()
            if not positions:
                outcome.append(0.0)
                continue
            ends = token_char_ends(self.tokenizer, ids[i, positions].tolist())
            steps = self.checks(s.prompt, s.completion)
            for char_index, ok in steps:
                k = next((k for k, e in enumerate(ends) if e > char_index), len(positions) - 1)
                step_mask[i, positions[k]] = True
                step_rewards[i, positions[k]] = float(ok)
            outcome.append(float(all(ok for _, ok in steps)))
        dev = rollout.input_ids.device
        return rollout.replace(step_rewards=step_rewards.to(dev), step_mask=step_mask.to(dev),
                               rewards=torch.tensor(outcome, dtype=torch.float32, device=dev))
