"""The six methods of DeepSeekMath §5.2 as compositions, and the one registry of method names.

Each preset returns a :class:`Method` -- (data source, reward, coefficient) -- whose coefficient
is an alias of a ``chain`` with the paper's equation in its docstring, and whose data source is a
recipe (``unified_rl.data.recipes``) the Trainer builds on the run's rows and sampler. A method
has one name everywhere: ``Method.name``, its chain's name, the CLI's ``--method`` and the docs.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .coefficients import (
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
from .data.recipes import Pairs, Sampled, SourceRecipe, Supervised
from .hf.value import value_model_from_policy
from .protocols import GradientCoefficient, RewardFunction, check_coefficient


@dataclass(frozen=True)
class Method:
    """A training method: where the data comes from (a recipe), what scores it, and the per-token GC.

    ``reward`` may be None: the run's reward (``Trainer(reward=...)``) is used, and a method whose
    coefficient reads rewards cannot run without one.
    """

    name: str
    coefficient: GradientCoefficient
    data_source: SourceRecipe
    reward: Optional[RewardFunction] = None

    def __post_init__(self) -> None:
        check_coefficient(self.coefficient, f"method {self.name!r}: coefficient")


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
    """PPO: GC = A_t * rho_t * 1_clip, A_t by GAE(gamma, lambda) against a value model that the
    coefficient trains; KL in the reward, r_t = r(q, o) 1[t = |o|] - beta log(pi_old / pi_ref).
    The value model defaults to a copy of the policy's trunk with a scalar head (``hf.value_model_from_policy``)."""
    advantage = gae(value_model, gamma=gamma, lam=lam, kl_beta=beta, whiten=whiten, value_lr=value_lr, value_clip=value_clip,
                    value_model_factory=value_model_from_policy)
    coef = chain(advantage, ppo_clip(epsilon), aggregation=sequence_mean(), name="ppo")
    return Method("ppo", coef, data_source or Sampled(1, online=True), reward)


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


# ---------------------------------------------------------------------- the registry (the edge)
@dataclass(frozen=True)
class Entry:
    """A registered method: its preset and how a TrainConfig's fields map onto the preset's arguments."""

    name: str
    preset: Callable[..., Method]
    from_config: Callable[[Any], Method]
    summary: str


REGISTRY: dict[str, Entry] = {}


def register(name: str, preset: Callable[..., Method], from_config: Callable[[Any], Method], summary: str) -> None:
    """Add a method name (CLI ``--method``, config ``method``, docs); a name registered twice is an error."""
    if name in REGISTRY:
        raise ValueError(f"method {name!r} is registered already (by {REGISTRY[name].preset.__module__}.{REGISTRY[name].preset.__name__})")
    REGISTRY[name] = Entry(name, preset, from_config, summary)


def from_config(cfg: Any) -> Method:
    """The registered method ``cfg.method`` built with the config's settings (beta, epsilon, G ...)."""
    if cfg.method not in REGISTRY:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(REGISTRY)}")
    method = REGISTRY[cfg.method].from_config(cfg)
    assert method.name == cfg.method, (method.name, cfg.method)  # one name everywhere
    return method


register("sft", sft, lambda c: sft(), "supervised fine-tuning, GC = 1")
register("rft", rft, lambda c: rft(samples_per_question=c.group_size), "rejection sampling from the frozen SFT model, GC = 1[correct]")
register("online_rft", online_rft, lambda c: online_rft(samples_per_question=c.group_size), "rejection sampling from the current policy")
register("dpo", dpo, lambda c: dpo(beta=c.dpo_beta, samples_per_question=c.group_size), "direct preference optimisation on sampled pairs")
register("ppo", ppo, lambda c: ppo(epsilon=c.epsilon, beta=c.beta), "clipped surrogate, GAE with a value model, KL in the reward")
register("grpo", grpo, lambda c: grpo(beta=c.beta, epsilon=c.epsilon, group_size=c.group_size), "group-normalised outcome reward, clip, k3 KL")
register("grpo_process", lambda **kw: grpo(supervision="process", **kw),
         lambda c: grpo(beta=c.beta, epsilon=c.epsilon, supervision="process", group_size=c.group_size),
         "GRPO with process supervision (normalised step rewards)")

__all__ = ["Method", "sft", "rft", "online_rft", "dpo", "ppo", "grpo", "REGISTRY", "register", "from_config"]
