"""The training/inference mismatch correction as a piece: a term multiplied by an importance weight
between the trainer's pi_old and the sampler's pi_sampler (vLLM's log-probs differ from the
trainer's recomputation even for the same weights).

    r_t = pi_old(o_t) / pi_sampler(o_t)   per token, or R_i = prod_t r_t per sequence
    truncate: w = clamp(r, C_min, C_max)         (truncated importance sampling, verl's TIS: C_max = 2)
    mask:     w = r where C_min <= r <= C_max, else 0
as TRL 1.16's ``vllm_importance_sampling_mode`` = token_truncate, token_mask, sequence_truncate,
sequence_mask (TRL's default: sequence_mask, C_max = 3). The weight reads only recorded
log-probs, so it is a constant of the batch: the corrected term's objective is the term's with
its weights times w, and its GC the term's GC times w (TRL multiplies the policy loss by it and
adds the KL term after, as ``corrected`` does when the KL is another term of the chain).
"""

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..names import CORRECTION_MODES
from ..rollout import Rollout
from .masks import Scaled
from .pieces import Term
from .terms import masked, token_mean_of

MODES = CORRECTION_MODES


@runtime_checkable
class ImportanceWeight(Protocol):
    """What ``corrected`` multiplies a term by: a weight w[b, t] read from recorded log-probs only (a
    constant of the batch), with its ``needs``, a ``label``, a ``mode`` name and ``metrics``."""

    needs: frozenset
    mode: str

    @property
    def label(self) -> str: ...

    def weight(self, rollout: Rollout, dtype: torch.dtype) -> Tensor:
        """w at every output token (0 elsewhere)."""

    def metrics(self, rollout: Rollout, dtype: torch.dtype) -> dict[str, float]:
        """The weight's numbers for the step's metrics."""


@dataclass(frozen=True)
class SamplerCorrection:
    """The importance weight w[b, t] from ``old_logprobs`` and ``sampler_logprobs`` (see the module docstring)."""

    mode: str = "token_truncate"
    c_min: Optional[float] = None
    c_max: Optional[float] = 2.0
    needs = frozenset({"old_logprobs", "sampler_logprobs"})

    @property
    def label(self) -> str:
        return f"sampler_correction({self.mode!r}, c_min={self.c_min}, c_max={self.c_max})"

    def log_ratio(self, rollout: Rollout, dtype: torch.dtype) -> Tensor:
        """log(pi_old / pi_sampler) per token, or summed over each sequence (broadcast), 0 outside output tokens."""
        diff = masked(rollout, rollout.old_logprobs.to(dtype) - rollout.sampler_logprobs.to(dtype))
        return masked(rollout, diff.sum(-1, keepdim=True).expand_as(diff)) if self.mode.startswith("sequence") else diff

    def weight(self, rollout: Rollout, dtype: torch.dtype) -> Float[Tensor, "batch seq"]:
        """w: the truncated ratio, or the ratio masked to 0 outside [c_min, c_max]."""
        r = torch.exp(self.log_ratio(rollout, dtype))
        if self.mode.endswith("truncate"):
            return masked(rollout, r.clamp(min=self.c_min, max=self.c_max))
        lo = self.c_min if self.c_min is not None else -float("inf")
        hi = self.c_max if self.c_max is not None else float("inf")
        return masked(rollout, torch.where((r < lo) | (r > hi), torch.zeros_like(r), r))

    def metrics(self, rollout: Rollout, dtype: torch.dtype) -> dict[str, float]:
        """The mismatch, per step: mean and max |log pi_old - log pi_sampler|, KL(sampler || trainer)
        (the k3 estimate from the sampler's own samples), and the fraction of tokens the bounds changed."""
        diff = masked(rollout, rollout.old_logprobs.to(dtype) - rollout.sampler_logprobs.to(dtype))
        r = torch.exp(self.log_ratio(rollout, dtype))
        changed = rollout.completion_mask & (self.weight(rollout, dtype) != masked(rollout, r))
        n = rollout.num_completion_tokens
        return {"mismatch/logp_diff_mean": token_mean_of(rollout, diff.abs()),
                "mismatch/logp_diff_max": float(diff.abs().max()) if n else 0.0,
                "mismatch/kl_sampler_trainer": token_mean_of(rollout, torch.exp(diff) - diff - 1),
                "mismatch/frac_corrected": token_mean_of(rollout, changed.to(dtype))}


@dataclass(frozen=True)
class Corrected(Scaled):
    """``term`` with its objective weights and its GC multiplied by the correction's weight w."""

    term: Term
    correction: ImportanceWeight

    @property
    def extra_needs(self) -> frozenset:
        return self.correction.needs

    @property
    def label(self) -> str:
        return f"corrected({self.term.label}, {self.correction.label})"

    @property
    def formula(self) -> str:
        return rf"w_t \big({self.term.formula}\big),\ w = \text{{{self.correction.mode}}}\big(\tfrac{{\pi_{{old}}}}{{\pi_{{sampler}}}}\big)"

    def factor(self, rollout: Rollout, logp: Tensor) -> Tensor:
        return self.correction.weight(rollout, logp.dtype)

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        return {**self.term.metrics(rollout, logp), **self.correction.metrics(rollout, logp.dtype)}


def sampler_correction(mode: str = "token_truncate", c_max: Optional[float] = 2.0, c_min: Optional[float] = None) -> SamplerCorrection:
    """The mismatch weight: ``mode`` one of token_truncate (verl's TIS, C = 2), token_mask,
    sequence_truncate, sequence_mask (TRL's default, with c_max = 3)."""
    if mode not in MODES:
        raise ValueError(f"sampler_correction: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if c_max is not None and c_min is not None and not c_min <= c_max:
        raise ValueError(f"sampler_correction: need c_min <= c_max, got {c_min}, {c_max}")
    if c_max is None and c_min is None:
        raise ValueError("sampler_correction: give c_max, c_min or both")
    return SamplerCorrection(mode, c_min, c_max)


def corrected(term: Term, correction: ImportanceWeight) -> Corrected:
    """``term`` weighted by the sampler-mismatch correction, e.g. ``corrected(ppo_clip(0.2), sampler_correction())``."""
    return Corrected(term, correction)
