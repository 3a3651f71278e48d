"""The six methods of DeepSeekMath §5.2 as compositions (and GRPO with process supervision)."""

from typing import Any, Optional

from ..coefficients import (
    chain,
    constant,
    correct,
    dpo_term,
    gae,
    group_mean,
    group_normalized,
    kl_k3,
    policy_gradient,
    ppo_clip,
    process_normalized,
    sequence_mean,
)
from ..critic import CriticSpec
from ..data.recipes import Pairs, Sampled, SourceRecipe, Supervised
from ..protocols import RewardFunction
from .method import Method


def sft(data_source: Optional[SourceRecipe] = None) -> Method:
    """SFT: GC = 1 on every token of a supervised (q, o). Loss: mean_i (1/|o_i|) sum_t -log pi(o_t)."""
    return Method("sft", chain(constant(1.0), policy_gradient(), aggregation=sequence_mean(), name="sft"), data_source or Supervised())


def rft(data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None, samples_per_question: int = 4) -> Method:
    """RFT: o sampled **offline** from the frozen SFT model; GC = 1[o correct]."""
    coef = chain(correct(), policy_gradient(), aggregation=sequence_mean(), name="rft")
    return Method("rft", coef, data_source or Sampled(samples_per_question, online=False), reward)


def online_rft(data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None, samples_per_question: int = 4) -> Method:
    """Online RFT: o sampled **online** from the current policy; GC = 1[o correct]."""
    coef = chain(correct(), policy_gradient(), aggregation=sequence_mean(), name="online_rft")
    return Method("online_rft", coef, data_source or Sampled(samples_per_question, online=True), reward)


def dpo(beta: float = 0.1, length_normalized: bool = True, data_source: Optional[SourceRecipe] = None,
        reward: Optional[RewardFunction] = None, samples_per_question: int = 8) -> Method:
    """DPO: z = beta (l(o+) - l(o-)), l(o) = (1/|o|) sum_t log(pi/pi_ref) (paper) or the sum
    (``length_normalized=False``, Rafailov et al.); GC = +beta sigmoid(-z) on o+, -beta sigmoid(-z) on o-.
    Pairs (o+ correct, o- wrong) come from ``samples_per_question`` draws of the frozen SFT model."""
    coef = chain(None, dpo_term(beta, length_normalized), aggregation=group_mean(length_normalized), name="dpo")
    return Method("dpo", coef, data_source or Pairs(samples_per_question), reward)


def ppo(epsilon: float = 0.2, beta: float = 0.04, *, gamma: float = 1.0, lam: float = 0.95, value_model: Any = None,
        value_lr: float = 1e-4, value_clip: Optional[float] = 0.2, whiten: bool = False, data_source: Optional[SourceRecipe] = None,
        reward: Optional[RewardFunction] = None) -> Method:
    """PPO: GC = A_t * rho_t * 1_clip, A_t by GAE(gamma, lambda) against the critic's values; KL in
    the reward, r_t = r(q, o) 1[t = |o|] - beta log(pi_old / pi_ref). Each run trains its own
    critic (``unified_rl.critic``): a copy of ``value_model`` if given, else the one registered for
    the policy's kind (a transformers policy: a copy of its trunk with a scalar head,
    ``hf.value_model_from_policy``), with AdamW at ``value_lr`` and the value loss clipped to ``value_clip``."""
    advantage = gae(gamma=gamma, lam=lam, kl_beta=beta, whiten=whiten)
    coef = chain(advantage, ppo_clip(epsilon), aggregation=sequence_mean(), name="ppo")
    critic = CriticSpec(lr=value_lr, clip=value_clip, model=value_model)
    return Method("ppo", coef, data_source or Sampled(1, online=True), reward, critic)


_SUPERVISION = {"outcome": group_normalized, "process": process_normalized}


def grpo(beta: float = 0.04, epsilon: float = 0.2, supervision: str = "outcome", *, group_size: int = 8,
         epsilon_high: Optional[float] = None, data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """GRPO (Eq. 3): GC = A_{i,t} rho_{i,t} 1_clip + beta (pi_ref/pi - 1), with the per-sequence mean.

    ``grpo(beta, epsilon) == chain(group_normalized(), ppo_clip(epsilon), kl_k3(beta), aggregation=sequence_mean())``;
    ``supervision="process"`` swaps in ``process_normalized()`` (the method ``grpo_process``).
    """
    if supervision not in _SUPERVISION:
        raise ValueError(f"grpo: supervision must be one of {sorted(_SUPERVISION)}, got {supervision!r}")
    if group_size < 2:
        raise ValueError(f"grpo: group_size (G) must be >= 2 for group-relative advantages, got {group_size}")
    name = "grpo" if supervision == "outcome" else "grpo_process"
    coef = chain(_SUPERVISION[supervision](), ppo_clip(epsilon, epsilon_high), kl_k3(beta), aggregation=sequence_mean(), name=name)
    return Method(name, coef, data_source or Sampled(group_size, online=True), reward)


def grpo_process(beta: float = 0.04, epsilon: float = 0.2, *, group_size: int = 8, epsilon_high: Optional[float] = None,
                 data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """GRPO with process supervision (§4.1.3): ``grpo(supervision="process")``, advantages from
    normalised step rewards summed over the steps that follow a token."""
    return grpo(beta, epsilon, "process", group_size=group_size, epsilon_high=epsilon_high, data_source=data_source, reward=reward)
