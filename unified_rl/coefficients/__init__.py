"""Gradient-coefficient pieces and their composition (see docs/paradigm.md)."""

from ._groups import groups_with_spread
from .advantages import constant, correct, group_normalized, leave_one_out, process_normalized
from .aggregation import (
    Aggregation, constant_weight, group_mean, mask_truncated, max_length_mean, sequence_mean, sequence_sum, token_mean,
)
from .compose import Chain, chain
from .correction import corrected, sampler_correction
from .dpo import dpo_term
from .gae import GAE, gae, gae_advantages
from .kto import kto_term, labelled_mean
from .opd import teacher_kl
from .orpo import chosen_nll, odds_ratio
from .masks import gated, off_policy_mask, top_entropy_mask
from .pieces import AdvantageEstimator, Piece, Term
from .ratio import cispo, ppo_clip, sapo
from .returns import discounted_returns
from .staleness import MaskedImportance, decoupled_ppo, masked_importance
from .terms import kl, kl_estimate, kl_k3, policy_gradient
from .vocabulary import VocabularyTerm, entropy_bonus, jsd, kl_full, reads_of

__all__ = [
    "groups_with_spread", "Aggregation",
    "Chain", "chain", "constant", "correct", "group_normalized", "leave_one_out", "process_normalized", "discounted_returns",
    "constant_weight", "group_mean", "mask_truncated", "max_length_mean", "sequence_mean", "sequence_sum", "token_mean",
    "dpo_term", "teacher_kl", "kto_term", "labelled_mean", "chosen_nll", "odds_ratio", "GAE", "gae", "AdvantageEstimator", "Piece", "Term", "gated", "corrected", "sampler_correction", "off_policy_mask", "top_entropy_mask",
    "gae_advantages", "VocabularyTerm", "reads_of", "jsd", "entropy_bonus", "kl_full", "kl", "kl_estimate", "kl_k3", "policy_gradient", "ppo_clip", "sapo", "cispo",
    "MaskedImportance", "decoupled_ppo", "masked_importance",
]
