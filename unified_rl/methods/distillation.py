"""Distillation as terms over the vocabulary (``coefficients.vocabulary``): the student follows the
run's teacher (``Trainer(teacher=...)``, ``--teacher PATH``) through C = dj / d log pi at every
output position, token-mean weighted, with no reward and no sampled-token GC."""

from typing import Optional

from ..coefficients import chain, jsd, token_mean
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
