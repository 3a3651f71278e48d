"""Preference losses beside the paper's DPO, each a GC on o+ and o- of a pair (``coefficients.dpo``)."""

from typing import Optional

from .. import coefficients as C
from ..data.recipes import Pairs, RankedPairs, SourceRecipe, Unpaired
from ..protocols import RewardFunction
from .method import Method


def _pairs(name: str, term: C.Term, normalized: bool, data_source: Optional[SourceRecipe], reward: Optional[RewardFunction],
           samples_per_question: int, advantage: Optional[C.AdvantageEstimator] = None, *more: C.Term) -> Method:
    coef = C.chain(advantage, *more, term, aggregation=C.group_mean(normalized), name=name)
    return Method(name, coef, data_source or Pairs(samples_per_question), reward)


def ipo(beta: float = 0.1, *, length_normalized: bool = True, data_source: Optional[SourceRecipe] = None,
        reward: Optional[RewardFunction] = None, samples_per_question: int = 8) -> Method:
    """IPO (Azar et al. 2023): loss (m - 1 / (2 beta))^2 on the margin of mean per-token log-ratios
    (TRL's length-normalised form); GC = -2 (m - 1/(2 beta)) on o+, the opposite on o-."""
    return _pairs("ipo", C.dpo_term(beta, length_normalized, "ipo"), length_normalized, data_source, reward, samples_per_question)


def hinge(beta: float = 0.1, *, length_normalized: bool = False, data_source: Optional[SourceRecipe] = None,
          reward: Optional[RewardFunction] = None, samples_per_question: int = 8) -> Method:
    """SLiC's hinge: loss max(0, 1 - beta m) on the summed log-ratio margin (TRL ``loss_type="hinge"``);
    GC = beta on o+ and -beta on o- while the margin is under 1 / beta, then 0."""
    return _pairs("hinge", C.dpo_term(beta, length_normalized, "hinge"), length_normalized, data_source, reward, samples_per_question)


def simpo(beta: float = 2.0, gamma: float = 1.0, *, data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None,
          samples_per_question: int = 8) -> Method:
    """SimPO (Meng et al. 2024): reference-free and length-normalised, loss -log sigmoid(beta m - gamma)
    with m the margin of mean per-token log-probs (TRL's CPOTrainer ``loss_type="simpo"``, whose
    ``simpo_gamma`` is this ``gamma``: TRL writes beta (m - simpo_gamma / beta)). Defaults from the
    SimPO paper's range (gamma / beta = 0.5), not TRL's (beta 0.1, simpo_gamma 0.5)."""
    return _pairs("simpo", C.dpo_term(beta, True, "simpo", gamma), True, data_source, reward, samples_per_question)


def orpo(beta: float = 0.1, *, data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None,
         samples_per_question: int = 8) -> Method:
    """ORPO (Hong et al. 2024; TRL ``experimental.orpo``): the chosen answers' mean token NLL plus
    beta times the pairs' mean -log sigmoid of the log odds ratio, no reference model
    (``coefficients.orpo``). ``beta`` is TRL's (the paper's lambda), default 0.1 as TRL's."""
    return _pairs("orpo", C.odds_ratio(beta), True, data_source, reward, samples_per_question, C.chosen_nll(), C.policy_gradient())


def online_dpo(beta: float = 0.1, *, data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """Online DPO (Guo et al. 2024; TRL ``experimental.online_dpo``, ``loss_type="sigmoid"``): two
    samples per question from the current policy, ranked by the run's reward (``RankedPairs``), and
    DPO's loss -log sigmoid(beta m) on the summed log-ratio margin, as TRL computes it."""
    coef = C.chain(None, C.dpo_term(beta, False, "sigmoid"), aggregation=C.group_mean(False), name="online_dpo")
    return Method("online_dpo", coef, data_source or RankedPairs(), reward)


def kto(beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0, *, data_source: Optional[SourceRecipe] = None,
        reward: Optional[RewardFunction] = None, samples_per_question: int = 2) -> Method:
    """KTO (Ethayarajh et al. 2024; TRL ``KTOTrainer``, ``loss_type="kto"``): unpaired rows, each
    desirable or undesirable, loss lambda_D (1 - sigma(beta (r - z0))) or lambda_U (1 - sigma(beta (z0 - r)))
    with r the row's summed log-ratio to the reference and z0 the batch's KL estimate from
    mismatched rows (``coefficients.kto``), mean over the labelled rows. Default data: samples of
    the frozen starting policy labelled by the run's reward (``Unpaired``); a chosen/rejected
    dataset is unpaired (``UnpairedPreferences``). Defaults are TRL's."""
    coef = C.chain(None, C.kto_term(beta, desirable_weight, undesirable_weight), aggregation=C.labelled_mean(), name="kto")
    return Method("kto", coef, data_source or Unpaired(samples_per_question), reward)
