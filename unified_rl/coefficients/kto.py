"""KTO (Ethayarajh et al. 2024; TRL ``KTOTrainer``, ``loss_type="kto"``) as a gradient coefficient.

Unpaired rows, each desirable (``chosen`` True) or undesirable, and beside them ``kl_sample``
rows: a question with another row's completion (TRL cycles the completions by one within the
batch), whose only use is the reference point

    z0 = max(0, mean_{kl rows} sum_t log(pi / pi_ref)(o_t))          (no gradient)

With r = sum_t log(pi / pi_ref)(o_t) of a labelled row and N the labelled rows (every rank's):

    L = (1/N) [ sum_desirable lambda_D (1 - sigma(beta (r - z0))) + sum_undesirable lambda_U (1 - sigma(beta (z0 - r))) ]

so GC = lambda_D beta sigma(z) (1 - sigma(z)), z = beta (r - z0), on a desirable row's tokens and
-lambda_U beta sigma(z) (1 - sigma(z)), z = beta (z0 - r), on an undesirable row's; the 1/N is the
aggregation's (:func:`labelled_mean`), and kl rows weigh 0. z0 reads the policy without gradient:
``prepare`` takes it from ``old_logprobs`` (the policy the step starts from; TRL takes it at the
loss call, the same policy at the first update of a batch), so it never depends on the
micro-batch split. Over ranks it is the mean over every rank's kl rows (TRL averages the ranks'
means: the same when the ranks hold equally many).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..distributed import global_sum
from ..rollout import Rollout
from .aggregation import Aggregation
from .pieces import Term
from .terms import masked


@dataclass(frozen=True)
class LabelledMean(Aggregation):
    """KTO's aggregation: sum over each labelled row's tokens, mean over the labelled rows of the
    batch (every rank's): w = 1 / N; 0 on ``kl_sample`` rows."""

    needs = frozenset({"kl_sample"})
    formula = r"\frac{\mathbb{1}[\text{labelled}]}{N}"

    def __call__(self, rollout: Rollout) -> Float[Tensor, "batch seq"]:
        labelled = ~rollout.kl_sample
        n = global_sum(int(labelled.sum()))
        if n == 0:
            raise ValueError("labelled_mean(): the batch has no labelled row (every row is a kl_sample)")
        return (rollout.completion_mask & labelled[:, None]).to(torch.float64) / n


@dataclass(frozen=True)
class KTOTerm(Term):
    """KTO's loss on unpaired desirable / undesirable rows (see the module docstring)."""

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    needs = frozenset({"chosen", "kl_sample", "old_logprobs", "ref_logprobs"})

    @property
    def label(self) -> str:
        return f"kto(beta={self.beta:g})"

    @property
    def formula(self) -> str:
        b = f"{self.beta:g}"
        return (rf"\pm \lambda_\pm {b}\,\sigma(z)(1 - \sigma(z)),\ z = \pm {b}(r - z_0),\ "
                r"r = \sum_t \log\frac{\pi}{\pi_{ref}}")

    def check(self, rollout: Rollout) -> None:
        if global_sum(int(rollout.kl_sample.sum())) == 0:
            raise ValueError(f"{self.label}: the batch has no kl_sample row, so there is no reference point z0 "
                             "(KTO needs mismatched rows beside the labelled ones: data.Unpaired builds them)")

    def prepare(self, rollout: Rollout) -> Rollout:
        kl_rows = rollout.kl_sample
        ratio = masked(rollout, rollout.old_logprobs.double() - rollout.ref_logprobs.double()).sum(-1)
        z0 = max(0.0, float(global_sum(ratio[kl_rows].sum())) / global_sum(int(kl_rows.sum())))
        return rollout.replace(reference_point=torch.full((rollout.batch_size,), z0, dtype=torch.float64,
                                                          device=rollout.input_ids.device))

    def _z(self, rollout: Rollout, logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if rollout.reference_point is None:
            raise ValueError(f"{self.label}: Rollout.reference_point is None; call coefficient.prepare(rollout) first")
        r = masked(rollout, logp - rollout.ref_logprobs.to(logp.dtype)).sum(-1)
        z0 = rollout.reference_point.to(logp.dtype)
        desirable = rollout.chosen & ~rollout.kl_sample
        sign = desirable.to(logp.dtype) * 2 - 1
        lam = torch.tensor([self.undesirable_weight, self.desirable_weight], dtype=logp.dtype, device=logp.device)[desirable.long()]
        return self.beta * sign * (r - z0), lam, sign

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        z, lam, _ = self._z(rollout, logp)
        c = rollout.weights.to(logp.dtype).amax(-1)  # 1/N on a labelled row, 0 on a kl row
        return -(c * lam * (1 - torch.sigmoid(z))).sum()

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        z, lam, sign = self._z(rollout, logp)
        s = torch.sigmoid(z)
        per_seq = torch.where(rollout.kl_sample, torch.zeros_like(z), sign * lam * self.beta * s * (1 - s))
        return masked(rollout, per_seq[:, None].expand_as(logp))

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        z, lam, _ = self._z(rollout, logp)
        reward = self.beta * masked(rollout, logp - rollout.ref_logprobs.to(logp.dtype)).sum(-1)  # TRL's rewards/*
        labelled = ~rollout.kl_sample
        out = {"kto/reference_point": float(rollout.reference_point[0]) if rollout.batch_size else 0.0,
               "kto/loss": float((lam * (1 - torch.sigmoid(z)))[labelled].mean()) if bool(labelled.any()) else 0.0}
        for name, rows in (("desirable", labelled & rollout.chosen), ("undesirable", labelled & ~rollout.chosen)):
            if bool(rows.any()):
                out[f"kto/reward_{name}"] = float(reward[rows].mean())
        return out


def labelled_mean() -> LabelledMean:
    """KTO's aggregation: w = 1/N on the labelled rows' tokens, 0 on the kl rows."""
    return LabelledMean()


def kto_term(beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> KTOTerm:
    """KTO's term (TRL's defaults: beta 0.1, both weights 1)."""
    if not beta > 0:
        raise ValueError(f"kto: beta must be > 0, got {beta}")
    for name, w in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if not w > 0:
            raise ValueError(f"kto: {name} must be > 0, got {w}")
    return KTOTerm(beta, desirable_weight, undesirable_weight)
