"""Gradient-coefficient pieces and their composition (see docs/paradigm.md)."""

from .advantages import constant, correct, group_normalized, leave_one_out, process_normalized
from ._groups import groups_with_spread
from .aggregation import constant_weight, group_mean, sequence_mean, token_mean
from .compose import Chain, chain
from .dpo import dpo_term
from .gae import GAE, gae, gae_advantages
from .pieces import AdvantageEstimator, Piece, Term
from .terms import kl_k3, policy_gradient, ppo_clip

__all__ = [
    "groups_with_spread",
    "Chain", "chain", "constant", "correct", "group_normalized", "leave_one_out", "process_normalized",
    "constant_weight", "group_mean", "sequence_mean", "token_mean", "dpo_term", "GAE", "gae", "AdvantageEstimator", "Piece", "Term",
    "gae_advantages", "kl_k3", "policy_gradient", "ppo_clip",
]
