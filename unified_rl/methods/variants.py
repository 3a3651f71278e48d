"""The GRPO family as practitioners run it in 2025-26, each a composition of the same pieces.

Every preset is one ``chain`` (advantage estimator, terms, aggregation) and a data source; the
table in docs/paradigm.md is printed from these chains (``python -m unified_rl.apps.docs_method_table``).
"""

from typing import Optional

from .. import coefficients as C
from ..data.recipes import Dynamic, Sampled, SourceRecipe
from ..protocols import RewardFunction
from .method import Method


def _sampled(data_source: Optional[SourceRecipe], group_size: int, dynamic_sampling: Optional[int] = None) -> SourceRecipe:
    if data_source is not None:
        return data_source
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size (G) must be an integer >= 2 for group-relative advantages, got {group_size!r}")
    inner = Sampled(group_size, online=True)
    return Dynamic(inner, dynamic_sampling) if dynamic_sampling else inner


def dr_grpo(max_completion_length: int, epsilon: float = 0.2, beta: float = 0.0, *, group_size: int = 8,
            data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """Dr. GRPO (Liu et al. 2025): A = r - mean(group), no std division; w = 1 / (B L_max), so a
    token weighs the same whatever its sequence's length (TRL ``loss_type="dr_grpo"``)."""
    coef = C.chain(C.group_normalized("none"), C.ppo_clip(epsilon), C.kl_k3(beta),
                   aggregation=C.max_length_mean(max_completion_length), name="dr_grpo")
    return Method("dr_grpo", coef, _sampled(data_source, group_size), reward)


def dapo(epsilon: float = 0.2, epsilon_high: float = 0.28, beta: float = 0.0, *, group_size: int = 8, scale_rewards: str = "group",
         mask_truncated: bool = False, dynamic_sampling: Optional[int] = None, data_source: Optional[SourceRecipe] = None,
         reward: Optional[RewardFunction] = None) -> Method:
    """DAPO (Yu et al. 2025): clip-higher (epsilon_high > epsilon) and the token mean over the whole
    batch, w = 1 / sum_i |o_i| (TRL ``loss_type="dapo"``). ``mask_truncated``: completions cut
    before eos weigh 0; ``dynamic_sampling=K``: keep only groups with a reward spread, drawing up
    to K batches (``data.Dynamic``). Add ``rewards.overlong_penalty`` to the reward for DAPO's
    soft overlong punishment."""
    agg = C.mask_truncated(C.token_mean()) if mask_truncated else C.token_mean()
    coef = C.chain(C.group_normalized(scale_rewards), C.ppo_clip(epsilon, epsilon_high), C.kl_k3(beta), aggregation=agg, name="dapo")
    return Method("dapo", coef, _sampled(data_source, group_size, dynamic_sampling), reward)


def bnpo(epsilon: float = 0.2, beta: float = 0.0, *, group_size: int = 8, scale_rewards: str = "group",
         data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """BNPO as TRL has it (``loss_type="bnpo"``): the token mean over the (local) batch, symmetric clip.
    With the whole batch prepared at once it equals DAPO's normaliser; they differ in TRL only
    under gradient accumulation and several processes."""
    coef = C.chain(C.group_normalized(scale_rewards), C.ppo_clip(epsilon), C.kl_k3(beta), aggregation=C.token_mean(), name="bnpo")
    return Method("bnpo", coef, _sampled(data_source, group_size), reward)


def gspo(epsilon: float = 3e-4, epsilon_high: float = 4e-4, beta: float = 0.0, *, group_size: int = 8, scale_rewards: str = "group",
         data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """GSPO (Zheng et al. 2025): one ratio per sequence, s_i = exp(mean_t log(pi / pi_old)), clipped
    per sequence in [1 - epsilon, 1 + epsilon_high]; the per-sequence mean (TRL
    ``importance_sampling_level="sequence"``, ``loss_type="grpo"``)."""
    coef = C.chain(C.group_normalized(scale_rewards), C.ppo_clip(epsilon, epsilon_high, level="sequence"), C.kl_k3(beta),
                   aggregation=C.sequence_mean(), name="gspo")
    return Method("gspo", coef, _sampled(data_source, group_size), reward)


def luspo(epsilon: float = 3e-4, epsilon_high: float = 4e-4, beta: float = 0.0, *, group_size: int = 8,
          data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """LUSPO (TRL ``loss_type="luspo"``): GSPO's sequence ratio, summed over each sequence's tokens
    and averaged over sequences (w = 1 / B), so a longer sequence weighs more."""
    coef = C.chain(C.group_normalized(), C.ppo_clip(epsilon, epsilon_high, level="sequence"), C.kl_k3(beta),
                   aggregation=C.sequence_sum(), name="luspo")
    return Method("luspo", coef, _sampled(data_source, group_size), reward)


def cispo(epsilon_high: float = 5.0, *, epsilon_low: Optional[float] = None, beta: float = 0.0, group_size: int = 8,
          scale_rewards: str = "group", data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """CISPO (MiniMax-M1): GC = stopgrad(min(r, epsilon_high)) A, the token mean over the batch (TRL
    ``loss_type="cispo"``). ``epsilon_low`` switches to verl's two-sided clamp(r, 1 - eps_low, 1 + eps_high)."""
    coef = C.chain(C.group_normalized(scale_rewards), C.cispo(epsilon_high, epsilon_low), C.kl_k3(beta),
                   aggregation=C.token_mean(), name="cispo")
    return Method("cispo", coef, _sampled(data_source, group_size), reward)


def sapo(tau_pos: float = 1.0, tau_neg: float = 1.05, *, beta: float = 0.0, group_size: int = 8, scale_rewards: str = "group",
         data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """SAPO (Qwen 2025): the soft gate 4 sigmoid(tau (r - 1)) / tau in place of the clip, tau_neg for
    negative advantages; the per-sequence mean (TRL ``loss_type="sapo"``)."""
    coef = C.chain(C.group_normalized(scale_rewards), C.sapo(tau_pos, tau_neg), C.kl_k3(beta), aggregation=C.sequence_mean(), name="sapo")
    return Method("sapo", coef, _sampled(data_source, group_size), reward)


def rloo(beta: float = 0.05, *, epsilon: float = 0.2, group_size: int = 8, data_source: Optional[SourceRecipe] = None,
         reward: Optional[RewardFunction] = None) -> Method:
    """RLOO as TRL's RLOOTrainer: the KL (k1, summed over the sequence) folded into the reward,
    the leave-one-out baseline, and one clipped ratio per sequence, exp(sum_t log(pi / pi_old)),
    averaged over sequences."""
    coef = C.chain(C.leave_one_out(beta, "k1"), C.ppo_clip(epsilon, level="sequence_sum"), aggregation=C.sequence_mean(), name="rloo")
    return Method("rloo", coef, _sampled(data_source, group_size), reward)


def reinforce_pp(beta: float = 0.01, gamma: float = 1.0, *, epsilon: float = 0.2, group_size: int = 8,
                 data_source: Optional[SourceRecipe] = None, reward: Optional[RewardFunction] = None) -> Method:
    """REINFORCE++ (Hu 2025, OpenRLHF): the k1 KL in the reward at every token, discounted returns,
    advantages whitened over the global batch (no critic, no group baseline), PPO's token clip and
    the token mean."""
    coef = C.chain(C.discounted_returns(gamma, beta), C.ppo_clip(epsilon), aggregation=C.token_mean(), name="reinforce_pp")
    return Method("reinforce_pp", coef, _sampled(data_source, group_size), reward)
