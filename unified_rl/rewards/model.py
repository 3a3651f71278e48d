"""Model-based rewards: a sequence classifier (or any model giving one logit per sequence)
scores prompt + completion; r = sigmoid(logit). It can be trained on labelled policy samples,
continually, replaying a fraction of history (DeepSeekMath Algorithm 1, 10% replay)."""

import copy
import random
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForSequenceClassification

from ..rollout import Rollout, Sample


def tiny_reward_model(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> LlamaForSequenceClassification:
    """A small Llama sequence classifier (one logit) for the embedded task."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, num_labels=1, pad_token_id=0, max_position_embeddings=128)
    return LlamaForSequenceClassification(cfg)


def reward_model_from_policy(policy: nn.Module) -> nn.Module:
    """A sequence classifier (one logit) of the policy's architecture, its trunk initialised from the
    policy's (as reward models are initialised from the SFT model in the paper); a fresh head."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(policy.config)
    cfg.num_labels = 1
    if cfg.pad_token_id is None:
        raise ValueError("reward_model_from_policy: the policy config has no pad_token_id (needed to find each sequence's last token)")
    clf = AutoModelForSequenceClassification.from_config(cfg)
    clf.base_model.load_state_dict(policy.base_model.state_dict())
    weight = next(policy.parameters())
    return clf.to(device=weight.device, dtype=weight.dtype)


class ModelReward:
    """r(q, o) = sigmoid(model(prompt + completion)); ``labeler`` gives training labels (a rule)."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, labeler: Optional[Callable[[Rollout, Sequence[Sample]], Rollout]] = None,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0):
        self.model, self.tokenizer, self.labeler = model, tokenizer, labeler
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.batch_size = batch_size
        self.history: list[tuple[str, str, float]] = []
        self.rng = random.Random(seed)

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        rows = [tok(p, add_special_tokens=True).input_ids + tok(c, add_special_tokens=False).input_ids for p, c in pairs]
        width = max(len(r) for r in rows)
        device = next(self.model.parameters()).device
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = 1
        return ids.to(device), attn.to(device)

    def logits(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """One logit per (prompt, completion) pair."""
        ids, attn = self._encode(pairs)
        return self.model(input_ids=ids, attention_mask=attn).logits.squeeze(-1).float()

    @torch.no_grad()
    def __call__(self, rollout: Rollout, texts: Sequence[Sample]) -> Rollout:
        was = self.model.training
        self.model.eval()
        scores = torch.cat([torch.sigmoid(self.logits([(s.prompt, s.completion) for s in texts[i: i + self.batch_size]]))
                            for i in range(0, len(texts), self.batch_size)])
        self.model.train(was)
        return rollout.replace(rewards=scores.to(rollout.input_ids.device))

    def fit(self, samples: Sequence[tuple[str, str, float]], epochs: int = 1) -> float:
        """Binary cross-entropy on (prompt, completion, label in [0, 1]); returns the mean loss."""
        self.model.train()
        losses = []
        for _ in range(epochs):
            order = list(range(len(samples)))
            self.rng.shuffle(order)
            for i in range(0, len(order), self.batch_size):
                batch = [samples[j] for j in order[i: i + self.batch_size]]
                logits = self.logits([(p, c) for p, c, _ in batch])
                labels = torch.tensor([y for _, _, y in batch], dtype=torch.float32, device=logits.device)
                loss = F.binary_cross_entropy_with_logits(logits, labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
        return sum(losses) / max(len(losses), 1)

    def label(self, rollout: Rollout) -> list[tuple[str, str, float]]:
        """(prompt, completion, label) triples for a rollout, labelled by the rule ``labeler``."""
        if self.labeler is None:
            raise ValueError("ModelReward.label: no labeler (a rule reward) was given")
        scored = self.labeler(rollout, rollout.texts)
        return [(s.prompt, s.completion, float(r)) for s, r in zip(rollout.texts, scored.rewards.tolist())]

    def continual_update(self, new: Sequence[tuple[str, str, float]], replay: float = 0.1, epochs: int = 1) -> dict[str, float]:
        """Train on new policy samples plus ``replay`` x len(new) samples of history; then keep them."""
        k = min(len(self.history), int(round(replay * len(new))))
        data = list(new) + self.rng.sample(self.history, k)
        loss = self.fit(data, epochs)
        self.history.extend(new)
        return {"reward_model/loss": loss, "reward_model/replayed": float(k)}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "history": [list(h) for h in self.history], "rng": list(self.rng.getstate()[1]), "rng_version": self.rng.getstate()[0]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [tuple(h) for h in state["history"]]
        self.rng.setstate((state["rng_version"], tuple(state["rng"]), None))
