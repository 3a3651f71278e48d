"""Model-based rewards: a sequence classifier (or any model giving one logit per sequence)
scores prompt + completion; r = sigmoid(logit). The model is any module whose forward takes
``input_ids, attention_mask`` and returns ``.logits [batch, 1]`` (``hf.reward_model_from_policy``
builds one from a transformers policy). It can be trained on labelled policy samples,
continually, replaying a fraction of history (DeepSeekMath Algorithm 1, 10% replay)."""

import random
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.collate import to_rollout
from ..distributed import global_objects
from ..protocols import RewardFunction
from ..rollout import Rollout, Sample


class LearnedReward(RewardFunction):
    """What a reward trained on rule-labelled policy samples shares: ``scores`` gives r in [0, 1]
    per (prompt, completion); ``fit`` trains on (prompt, completion, label) triples; ``labeler``
    (a rule reward) labels the policy samples it ``observe``s, and ``end_iteration`` re-trains on
    them with replay (DeepSeekMath Algorithm 1). Subclasses define ``scores`` and ``fit``."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, labeler: Optional[Callable[[Rollout, Sequence[Sample]], Rollout]] = None,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, update_epochs: int = 1):
        self.model, self.tokenizer, self.labeler = model, tokenizer, labeler
        self.update_epochs = update_epochs  # passes over the new samples (and replay) at each end_iteration
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.batch_size = batch_size
        self.history: list[tuple[str, str, float]] = []
        self.pending: list[tuple[str, str, float]] = []  # observed policy samples, this iteration
        self._metrics: dict[str, float] = {}
        self.rng = random.Random(seed)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """r in [0, 1] per (prompt, completion) pair (with grad: call under ``torch.no_grad`` to score)."""
        raise NotImplementedError

    def fit(self, samples: Sequence[tuple[str, str, float]], epochs: int = 1) -> float:
        """Train on (prompt, completion, label in [0, 1]) triples; returns the mean loss."""
        raise NotImplementedError

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> Rollout:
        """(prompt, completion) pairs as right-padded rows on the model's device, the completion masked."""
        tok, device = self.tokenizer, next(self.model.parameters()).device
        return to_rollout([tok(p, add_special_tokens=True).input_ids for p, _ in pairs],
                          [tok(c, add_special_tokens=False).input_ids for _, c in pairs], pad_id=tok.pad_token_id, device=device)

    def _batches(self, samples: Sequence, epochs: int):
        """Shuffled batches of ``samples``, ``epochs`` times."""
        for _ in range(epochs):
            order = list(range(len(samples)))
            self.rng.shuffle(order)
            for i in range(0, len(order), self.batch_size):
                yield [samples[j] for j in order[i: i + self.batch_size]]

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """:meth:`scores` in eval mode, in batches of ``batch_size``."""
        was = self.model.training
        self.model.eval()
        out = torch.cat([self.scores(pairs[i: i + self.batch_size]).float() for i in range(0, len(pairs), self.batch_size)])
        self.model.train(was)
        return out

    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        scores = self.score_pairs([(s.prompt, s.completion) for s in texts])
        return rollout.replace(rewards=scores.to(rollout.input_ids.device))

    def label(self, rollout: Rollout) -> list[tuple[str, str, float]]:
        """(prompt, completion, label) triples for a rollout, labelled by the rule ``labeler``."""
        if self.labeler is None:
            raise ValueError(f"{type(self).__name__}.label: no labeler (a rule reward) was given")
        scored = self.labeler(rollout, rollout.texts)
        return [(s.prompt, s.completion, float(r)) for s, r in zip(rollout.texts, scored.rewards.tolist())]

    def continual_update(self, new: Sequence[tuple[str, str, float]], replay: float = 0.1, epochs: int = 1) -> dict[str, float]:
        """Train on new policy samples plus ``replay`` x len(new) samples of history; then keep them."""
        k = min(len(self.history), int(round(replay * len(new))))
        data = list(new) + self.rng.sample(self.history, k)
        loss = self.fit(data, epochs)
        self.history.extend(new)
        return {"reward_model/loss": loss, "reward_model/replayed": float(k)}

    def observe(self, rollout: Rollout) -> None:
        """Keep the batch's samples, labelled by ``labeler``, for the next :meth:`end_iteration`
        (a reward model without a labeler stays fixed), and measure the model's agreement with the
        labels on them (:meth:`metrics`)."""
        if self.labeler is not None:  # under torchrun every rank keeps every rank's samples: the replicas train alike
            labelled = self.label(rollout)
            if rollout.rewards is not None and labelled:  # how often the model's verdict (r > 0.5) agrees with the rule on the policy's samples
                agree = [(float(r) > 0.5) == (y > 0.5) for r, (_, _, y) in zip(rollout.rewards.tolist(), labelled)]
                self._metrics = {"reward_model/policy_accuracy": sum(agree) / len(agree),
                                 "reward_model/policy_label_rate": sum(y > 0.5 for _, _, y in labelled) / len(labelled)}
            self.pending.extend(global_objects(labelled))

    def metrics(self) -> dict[str, float]:
        """After :meth:`observe` with a labeler: the model's agreement with the rule on the last batch
        of policy samples (``reward_model/policy_accuracy``) and the rule's rate of correct ones."""
        return dict(self._metrics)

    def end_iteration(self, replay: float) -> dict[str, float]:
        """Algorithm 1's continual training on the samples observed since the last call."""
        if not self.pending:
            return {}
        out = self.continual_update(self.pending, replay, self.update_epochs)
        self.pending = []
        return out

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "pending": [list(p) for p in self.pending],
                "history": [list(h) for h in self.history], "rng": list(self.rng.getstate()[1]), "rng_version": self.rng.getstate()[0]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [tuple(h) for h in state["history"]]
        self.pending = [tuple(p) for p in state["pending"]]
        self.rng.setstate((state["rng_version"], tuple(state["rng"]), None))


class ModelReward(LearnedReward):
    """r(q, o) = sigmoid(model(prompt + completion)); ``labeler`` gives training labels (a rule)."""

    def logits(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """One logit per (prompt, completion) pair."""
        r = self._encode(pairs)
        return self.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits.squeeze(-1).float()

    def scores(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        return torch.sigmoid(self.logits(pairs))

    def fit(self, samples: Sequence[tuple[str, str, float]], epochs: int = 1) -> float:
        """Binary cross-entropy on (prompt, completion, label in [0, 1]); returns the mean loss."""
        self.model.train()
        losses = []
        for batch in self._batches(samples, epochs):
            logits = self.logits([(p, c) for p, c, _ in batch])
            labels = torch.tensor([y for _, _, y in batch], dtype=torch.float32, device=logits.device)
            losses.append(self._step(F.binary_cross_entropy_with_logits(logits, labels)))
        return sum(losses) / max(len(losses), 1)
