"""A generative verifier: a causal language model trained, as a language model, on the policy
samples a rule labels correct; it accepts a sample when every completion token is its own greedy
choice. r = sigmoid(min_t margin_t / temperature), margin_t = the logit of the sample's token minus
the best other token's logit, so r > 0.5 exactly when the verifier would have written the sample.

Unlike a sequence classifier, which sees a label per sample, it learns what a correct solution
writes at every token, so it can catch a wrong step result that a classifier only sees through the
final label. It knows only what its correct samples show: pair it with a classifier
(``Product``) where wrong samples can be ones it would write too."""

from typing import Sequence

import torch

from .model import LearnedReward


class VerifierReward(LearnedReward):
    """``model``: a causal LM (e.g. a copy of the policy) whose forward takes ``input_ids,
    attention_mask`` (and ``labels``) and returns ``.logits [batch, seq, vocab]`` (and ``.loss``);
    ``fit`` trains it on the samples labelled correct (label > 0.5) only."""

    def __init__(self, *args, temperature: float = 1.0, **kw):
        super().__init__(*args, **kw)
        if not temperature > 0:
            raise ValueError(f"VerifierReward: temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.lr = self.optimizer.param_groups[0]["lr"]

    def margins(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Per pair: the lowest margin over the completion's tokens (+inf for an empty completion)."""
        r = self._encode(pairs)
        logits = self.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1].float()  # predicts tokens 1..
        target = r.input_ids[:, 1:, None]
        own = logits.gather(-1, target)[..., 0]
        other = logits.scatter(-1, target, float("-inf")).amax(-1)
        margin = torch.where(r.completion_mask[:, 1:], own - other, torch.full_like(own, float("inf")))
        return margin.amin(1)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        return torch.sigmoid(self.margins(pairs) / self.temperature)

    def fit(self, samples: Sequence[tuple[str, str, float]], epochs: int = 1) -> float:
        """The language-model loss on the completions of the samples labelled correct, the lr decaying
        linearly to 0 over the call (each re-training is a short run of its own); returns its mean."""
        right = [(p, c) for p, c, y in samples if y > 0.5 and c]
        self.model.train()
        losses, steps = [], epochs * -(-len(right) // self.batch_size)
        for k, batch in enumerate(self._batches(right, epochs)):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * (1 - k / steps)
            r = self._encode(batch)
            labels = torch.where(r.completion_mask, r.input_ids, torch.full_like(r.input_ids, -100))  # the loss on the completion only
            losses.append(self._step(self.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long(), labels=labels).loss))
        return sum(losses) / max(len(losses), 1)
