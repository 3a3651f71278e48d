"""Token masks as composable pieces: ``gated(term, mask, ...)`` multiplies a term's objective and
GC by 0/1 masks (TRL applies its masks to the policy term, not to the KL term; so does this).

A mask is a callable ``mask(rollout, logp) -> Bool[batch, seq]`` (True: keep) with ``needs`` and
``label``; it is computed without gradient, so the gated term's GC is the term's GC times the mask.
"""

from dataclasses import dataclass
from typing import Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..distributed import global_values
from ..rollout import Rollout, RolloutField
from .pieces import Term
from .terms import masked, token_mean_of


class TokenMask(Protocol):
    """Which output tokens a term keeps (True) in this batch."""

    needs: frozenset[RolloutField] = frozenset()
    label: str = "mask"

    def __call__(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Bool[Tensor, "batch seq"]:
        ...

    def prepare(self, rollout: Rollout) -> Rollout:
        """Decide what needs the whole batch (a quantile), once, before any micro-batch. Default: nothing."""
        return rollout


@dataclass(frozen=True)
class OffPolicyMask(TokenMask):
    """DeepSeek-V3.2's off-policy sequence mask (TRL ``off_policy_mask_threshold``): drop a sequence
    whose advantage is negative and whose mean log(pi_old / pi) over its tokens exceeds ``threshold``
    (pi the current policy, without gradient)."""

    threshold: float
    needs = frozenset({"advantages", "old_logprobs"})

    @property
    def label(self) -> str:
        return f"off_policy_mask({self.threshold})"

    def __call__(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Bool[Tensor, "batch seq"]:
        kl = masked(rollout, rollout.old_logprobs.to(logp.dtype) - logp.detach()).sum(-1)
        mean_kl = kl / rollout.completion_lengths.to(logp.dtype).clamp(min=1)
        keep = (masked(rollout, rollout.advantages) >= 0) | (mean_kl <= self.threshold)[:, None]
        return keep & rollout.completion_mask


@dataclass(frozen=True)
class TopEntropyMask(TokenMask):
    """Keep the top ``quantile`` fraction of output tokens by the policy's entropy over the whole
    batch (TRL ``top_entropy_quantile``; Wang et al. 2025, "80/20"): tokens with entropy >= the batch's
    (1 - quantile) quantile. The threshold is taken in ``prepare`` from ``Rollout.entropies`` (the
    sampling policy's, filled by the loop), so it never depends on the micro-batch split; TRL takes
    it from the current policy at each loss call, which is the same at the first update of a batch."""

    quantile: float
    needs = frozenset({"entropies"})

    @property
    def label(self) -> str:
        return f"top_entropy_mask({self.quantile})"

    def prepare(self, rollout: Rollout) -> Rollout:
        values = global_values(rollout.entropies[rollout.completion_mask].to(torch.float64))  # every rank's tokens
        if values.numel() == 0:
            return rollout.replace(keep=torch.zeros_like(rollout.completion_mask))
        threshold = torch.quantile(values.to(torch.float64), 1 - self.quantile)
        keep = (rollout.entropies >= threshold.to(rollout.entropies.dtype)) & rollout.completion_mask
        return rollout.replace(keep=keep if rollout.keep is None else keep & rollout.keep)

    def __call__(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Bool[Tensor, "batch seq"]:
        if rollout.keep is None:
            raise ValueError(f"{self.label}: Rollout.keep is None; call coefficient.prepare(rollout) first")
        return rollout.keep


class Scaled(Term):
    """A term with its objective weights and its GC multiplied by a factor of the batch, [batch, seq]:
    a 0/1 mask (:class:`Gated`) or an importance weight (``correction.Corrected``). Subclasses hold
    ``term`` and give ``factor`` and ``extra_needs``; everything else is the term's."""

    term: Term

    @property
    def extra_needs(self) -> frozenset:
        """Rollout fields the factor reads."""
        return frozenset()

    def factor(self, rollout: Rollout, logp: Tensor) -> Tensor:
        """The factor at every token (0 outside output tokens)."""
        ...

    @property
    def needs(self) -> frozenset:
        return frozenset(self.term.needs) | self.extra_needs

    @property
    def couples_group(self) -> bool:
        return self.term.couples_group

    def check(self, rollout: Rollout) -> None:
        self.term.check(rollout)

    def prepare(self, rollout: Rollout) -> Rollout:
        return self.term.prepare(rollout)

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        f = self.factor(rollout, logp).to(rollout.weights.dtype)  # weights of dropped tokens exactly 0
        return self.term.objective(rollout.replace(weights=torch.where(f != 0, rollout.weights * f, torch.zeros_like(f))), logp)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        return self.term.gc_scaled(rollout, logp, self.factor(rollout, logp).to(logp.dtype))


@dataclass(frozen=True)
class Gated(Scaled):
    """``term`` with its objective and GC multiplied by every mask."""

    term: Term
    masks: tuple[TokenMask, ...]

    @property
    def extra_needs(self) -> frozenset:
        return frozenset().union(*(m.needs for m in self.masks))

    @property
    def label(self) -> str:
        return f"gated({self.term.label}, {', '.join(m.label for m in self.masks)})"

    @property
    def formula(self) -> str:
        return rf"\big({self.term.formula}\big)\,\mathbb{{1}}[\text{{{', '.join(m.label for m in self.masks)}}}]"

    def prepare(self, rollout: Rollout) -> Rollout:
        rollout = self.term.prepare(rollout)
        for m in self.masks:
            rollout = m.prepare(rollout)
        return rollout

    def keep(self, rollout: Rollout, logp: Tensor) -> Tensor:
        """Output tokens every mask keeps."""
        out = rollout.completion_mask
        for m in self.masks:
            out = out & m(rollout, logp)
        return out

    def factor(self, rollout: Rollout, logp: Tensor) -> Tensor:
        return self.keep(rollout, logp).to(logp.dtype)

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        dropped = rollout.completion_mask & ~self.keep(rollout, logp)
        return {**self.term.metrics(rollout, logp), "gc/frac_masked": token_mean_of(rollout, dropped.to(logp.dtype))}


def off_policy_mask(threshold: float) -> OffPolicyMask:
    """TRL's ``off_policy_mask_threshold``: drop negative-advantage sequences that drifted too far."""
    if not threshold >= 0:
        raise ValueError(f"off_policy_mask: threshold must be >= 0, got {threshold}")
    return OffPolicyMask(threshold)


def top_entropy_mask(quantile: float) -> TopEntropyMask:
    """TRL's ``top_entropy_quantile``: only the highest-entropy ``quantile`` of tokens keep the term."""
    if not 0 < quantile <= 1:
        raise ValueError(f"top_entropy_mask: quantile must be in (0, 1], got {quantile}")
    return TopEntropyMask(quantile)


def gated(term: Term, *masks: TokenMask) -> Gated:
    """``term`` kept only on tokens every mask keeps, e.g. ``gated(ppo_clip(0.2), off_policy_mask(0.5))``."""
    if not masks:
        raise ValueError("gated: give at least one mask")
    return Gated(term, tuple(masks))
