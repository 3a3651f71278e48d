"""On-policy distillation as a sampled reverse KL (Thinking Machines 2025; prime-rl's ``opd`` loss,
its ``teacher_tau`` term): the student's own samples, each token's advantage the teacher's
log-ratio against the student,

    GC_t = tau * (log pi_T(o_t) - log pi(o_t)) * rho_t,    rho_t = pi(o_t) / pi_old(o_t),

with the log-ratio held constant (prime-rl: ``teacher_kl.detach()``), so
E_{o ~ pi}[sum_t GC_t grad log pi(o_t)] is the per-token estimate of -tau grad KL(pi || pi_T) of
the sampled tokens. It reads only the teacher's log-prob of each sampled token (``Rollout.
teacher_logprobs``, filled by a teacher pass), never its whole distribution: the sampled
counterpart of ``vocabulary.jsd(1.0)`` (``distill``), which sums the same KL over the vocabulary.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..rollout import Rollout
from .pieces import Term
from .terms import masked, token_mean_of, weighted


@dataclass(frozen=True)
class TeacherKL(Term):
    """The sampled reverse-KL term (see the module docstring)."""

    tau: float = 1.0
    needs = frozenset({"teacher_logprobs", "old_logprobs"})

    @property
    def label(self) -> str:
        return f"teacher_kl(tau={self.tau:g})"

    @property
    def formula(self) -> str:
        return rf"{self.tau:g}\,(\log\pi_T - \log\pi)\,\frac{{\pi}}{{\pi_{{old}}}}"

    def _parts(self, rollout: Rollout, logp: Tensor) -> tuple[Tensor, Tensor]:
        gap = masked(rollout, rollout.teacher_logprobs.to(logp.dtype) - logp.detach())
        ratio = torch.exp(masked(rollout, logp - rollout.old_logprobs.to(logp.dtype)))
        return gap, ratio

    def objective(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, ""]:
        gap, ratio = self._parts(rollout, logp)
        return weighted(rollout, self.tau * gap * ratio)

    def gc(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> Float[Tensor, "batch seq"]:
        gap, ratio = self._parts(rollout, logp)
        return masked(rollout, self.tau * gap * ratio.detach())

    def metrics(self, rollout: Rollout, logp: Float[Tensor, "batch seq"]) -> dict[str, float]:
        gap, _ = self._parts(rollout, logp)
        return {"distill/teacher_kl": token_mean_of(rollout, gap)}  # prime-rl's teacher_kl: mean log pi_T - log pi


def teacher_kl(tau: float = 1.0) -> TeacherKL:
    """The sampled reverse KL to the teacher with weight ``tau`` (prime-rl's ``teacher_tau``)."""
    if not tau > 0:
        raise ValueError(f"teacher_kl: tau must be > 0, got {tau}")
    return TeacherKL(tau)
