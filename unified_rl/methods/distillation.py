"""Distillation: the student follows the run's teacher (``Trainer(teacher=...)``, ``--teacher PATH``),
with no reward. ``gkd`` and ``distill`` are terms over the vocabulary (``coefficients.vocabulary``:
C = dj / d log pi at every output position); ``opd`` is the sampled reverse KL, a GC on the sampled
token read from the teacher's log-prob of it (``coefficients.opd``). All token-mean weighted."""

from typing import Optional

from ..coefficients import chain, jsd, teacher_kl, token_mean
from ..data.recipes import Mixed, Sampled, SourceRecipe
from .method import Method


def gkd(beta: float = 0.5, lmbda: float = 0.5, *, data_source: Optional[SourceRecipe] = None) -> Method:
    """GKD (Agarwal et al. 2024; TRL ``experimental.gkd.GKDTrainer``): the generalized JSD to the
    teacher (``beta`` 0 forward KL, 1 reverse KL), on the student's own samples with probability
    ``lmbda`` and on the rows' completions otherwise. TRL's defaults (0.5, 0.5)."""
    coef = chain(None, aggregation=token_mean(), vocabulary=(jsd(beta),), name="gkd")
    return Method("gkd", coef, data_source or Mixed(lmbda))


def distill(beta: float = 1.0, *, data_source: Optional[SourceRecipe] = None) -> Method:
    """On-policy distillation as TRL's ``DistillationTrainer`` computes it: the generalized JSD to the
    teacher on the student's own samples, reverse KL by default (``beta`` = 1, TRL's default)."""
    coef = chain(None, aggregation=token_mean(), vocabulary=(jsd(beta),), name="distill")
    return Method("distill", coef, data_source or Sampled(1))


def opd(tau: float = 1.0, *, data_source: Optional[SourceRecipe] = None, samples_per_question: int = 1) -> Method:
    """On-policy distillation as a sampled reverse KL (prime-rl's ``opd`` loss): the student's own
    samples, GC = tau (log pi_T(o_t) - log pi(o_t)) pi / pi_old on each sampled token, token mean over
    the batch. Needs only the teacher's log-prob of each sampled token (one forward of the teacher)."""
    coef = chain(None, teacher_kl(tau), aggregation=token_mean(), name="opd")
    return Method("opd", coef, data_source or Sampled(samples_per_question))
