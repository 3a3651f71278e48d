"""The run's configuration, in four small frozen parts that validate themselves when built:
:class:`Optimisation`, :class:`Sampling`, :class:`ModelSetup` and :class:`RunSetup`, held by one
:class:`TrainConfig`. It holds no method math: a :class:`~unified_rl.methods.Method` owns its
hyper-parameters (beta, epsilon, G); a recipe's method keys build the method at the edge
(``unified_rl.apps.recipe``). Field names are unique across the parts, so a recipe, the command
line's flags and ``TrainConfig(lr=...)`` use the same flat names."""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from .names import CORRECTION_MODES, PRECISIONS, SAMPLERS
from .recipe_files import read_table
from .schedules import SCHEDULES

__all__ = ["Optimisation", "Sampling", "ModelSetup", "RunSetup", "TrainConfig", "METHOD_KEYS", "METHOD_SETTINGS", "fields_table", "read_table"]


def check_type(name: str, annotation: Any, value: Any) -> None:
    """``value`` has the field's type: true/false only where a switch is meant (never for a number),
    an integer where a count is meant, text where a name is, one of the listed words for a choice;
    None only where the field allows it."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    if value is None and type(None) in allowed:
        return
    kinds = [t for t in allowed if t is not type(None)]
    choices = [c for t in kinds if typing.get_origin(t) is Literal for c in typing.get_args(t)]
    if choices:
        if value not in choices or not isinstance(value, str):
            raise ValueError(f"config field {name!r} = {value!r}: choose one of {', '.join(choices)}")
        return
    fits = any(isinstance(value, bool) if t is bool else
               (isinstance(value, int) and not isinstance(value, bool)) if t is int else
               (isinstance(value, (int, float)) and not isinstance(value, bool)) if t is float else isinstance(value, t)
               for t in kinds)
    if not fits:
        want = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(t, t.__name__) for t in kinds)
        null = " (or null)" if type(None) in allowed else ""
        raise ValueError(f"config field {name!r} = {value!r}: must be {want}{null}, not {type(value).__name__}")


# Range rules: each returns why a value is wrong (None when it is fine); None values of optional fields are not checked.
def positive(v: Any) -> Optional[str]:
    """Why ``v`` is not an integer >= 1 (None when it is)."""
    return None if v >= 1 else "must be a positive integer"


def at_least_zero(v: Any) -> Optional[str]:
    """Why ``v`` is not a finite number >= 0."""
    return None if math.isfinite(v) and v >= 0 else "must be a finite number >= 0"


def above_zero(v: Any) -> Optional[str]:
    """Why ``v`` is not a finite number > 0."""
    return None if math.isfinite(v) and v > 0 else "must be a finite number > 0"


# The method's settings a recipe or a flag may give: type, range rule, help (None: the preset's own default).
METHOD_SETTINGS: dict[str, tuple[Any, Any, str]] = {
    "group_size": (Optional[int], positive, "G (GRPO) / samples per question (RFT, Online RFT, the pair methods); null: the method's (8, or 4 for RFT)"),
    "beta": (Optional[float], at_least_zero, "KL coefficient (GRPO k3 in the loss; PPO k1 in the reward); null: the method's default"),
    "epsilon": (Optional[float], at_least_zero, "clip range; null: the method's default (0.2 for most, GSPO 3e-4)"),
    "dpo_beta": (Optional[float], above_zero, "beta of the preference losses (dpo, ipo, hinge, simpo, orpo, kto); null: the method's default"),
    "desirable_weight": (Optional[float], above_zero, "KTO's weight on desirable rows (TRL's desirable_weight); null: 1"),
    "undesirable_weight": (Optional[float], above_zero, "KTO's weight on undesirable rows (TRL's undesirable_weight); null: 1"),
}
# Recipe keys that set a method, not the run: the command line and recipes build the Method from them.
METHOD_KEYS = ("method", *METHOD_SETTINGS)


def fraction(v: Any) -> Optional[str]:
    """Why ``v`` is not in (0, 1]."""
    return None if 0 < v <= 1 else "must be a fraction in (0, 1]"


def check_field(f: dataclasses.Field, annotation: Any, value: Any) -> None:
    """A field's type, then its range rule: a ValueError naming the field and the value."""
    check_type(f.name, annotation, value)
    why = f.metadata["rule"](value) if f.metadata["rule"] is not None and value is not None else None
    if why:
        raise ValueError(f"config field {f.name!r} = {value!r}: {why}")


def _spec(default: Any, help: str, rule: Optional[Callable[[Any], Optional[str]]] = None) -> Any:
    return field(default=default, metadata={"help": help, "rule": rule})


class _Part:
    """A frozen part of the configuration: every field's type and range is checked when it is built."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_field(f, hints[f.name], getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules that join two fields (none by default)."""

    def bad(self, name: str, why: str) -> ValueError:
        return ValueError(f"config field {name!r} = {getattr(self, name)!r}: {why}")


@dataclass(frozen=True)
class Optimisation(_Part):
    """How long and how the policy is updated."""

    steps: int = _spec(100, "policy steps per iteration (M)", positive)
    iterations: int = _spec(1, "outer iterations (I): reference reset + reward-model update", positive)
    questions_per_step: int = _spec(16, "questions sampled per step (the global batch under torchrun)", positive)
    mu: int = _spec(1, "policy updates per batch", positive)
    lr: float = _spec(3e-5, "learning rate of AdamW", above_zero)
    weight_decay: float = _spec(0.0, "AdamW's weight decay", at_least_zero)
    warmup_steps: int = _spec(0, "steps of linear warmup of the learning rate", at_least_zero)
    schedule: Literal[tuple(SCHEDULES)] = _spec("constant", "the learning rate after warmup")
    grad_clip: Optional[float] = _spec(1.0, "clip the gradient's global norm to this (null: no clipping)", above_zero)
    reset_reference: bool = _spec(True, "pi_ref <- pi_theta at each iteration (iterative RL)")
    reward_replay: float = _spec(0.1, "fraction of history replayed when re-training a reward model",
                                 lambda v: None if 0 <= v <= 1 else "is a fraction in [0, 1]")


@dataclass(frozen=True)
class Sampling(_Part):
    """How completions are sampled and how long they and their prompts may be."""

    max_new_tokens: int = _spec(48, "the longest completion sampled, in tokens", positive)
    max_prompt_tokens: int = _spec(256, "the longest prompt, in tokens (a longer one is an error naming its row)", positive)
    temperature: float = _spec(1.0, "sampling temperature (log-probs are taken at it too)", above_zero)
    top_k: int = _spec(0, "sample among the k most likely tokens only (0: all); recorded log-probs stay over the whole vocabulary",
                       lambda v: None if v >= 0 else "must be an integer >= 0 (0: no top-k)")
    top_p: float = _spec(1.0, "sample from the smallest set of tokens holding this probability (1: all); recorded log-probs stay "
                              "over the whole vocabulary", lambda v: None if 0 < v <= 1 else "must be a number in (0, 1] (1: no top-p)")
    sampler: str = _spec("static", "a name in names.SAMPLERS: static (lean static-cache decoder), hf (transformers generate), vllm "
                                   "(needs unified_rl[vllm]), or one a script registered",
                         lambda v: None if v in SAMPLERS else f"choose one of {', '.join(SAMPLERS)}")
    sampler_correction: Literal[("auto", "none", *CORRECTION_MODES)] = _spec(
        "auto", "the mismatch weight on the policy terms: auto (token_truncate for a sampler whose log-probs are another "
                "engine's, such as vllm; token_mask, decoupled PPO, for stale samples (async_staleness >= 1); none otherwise), none, or a mode")
    sampler_correction_max: float = _spec(2.0, "the upper bound C of the sampler_correction weight (verl's TIS: 2; TRL's "
                                               "sequence_mask default: 3)", above_zero)
    vllm_gpu_memory_utilization: float = _spec(0.3, "the share of GPU memory vLLM takes", fraction)
    vllm_max_model_len: Optional[int] = _spec(None, "prompt + completion tokens vLLM allots per sequence; null: the model's "
                                                    "context length", positive)
    vllm_sync_every: int = _spec(1, "copy the policy's weights into vLLM before every N-th sampling call", positive)
    max_turns: int = _spec(4, "with an environment (--env): model turns per episode (an episode cut here is truncated)", positive)
    max_episode_tokens: int = _spec(512, "with an environment: tokens after the prompt per episode, the model's and the environment's "
                                         "together (an episode cut here is truncated)", positive)
    max_observation_tokens: int = _spec(256, "with an environment: tokens of one environment reply (a longer one leaves the episode "
                                             "unscored)", positive)
    env_timeout_s: float = _spec(30.0, "with an environment: seconds each environment call may take (a slower one leaves the episode "
                                       "unscored)", above_zero)
    async_staleness: Optional[int] = _spec(None, "null: sample in the learner's process, then train; K: a rollout worker process samples "
                                                 "at most K policy versions behind the learner (0: in lockstep, the same samples)", at_least_zero)
    async_timeout_s: float = _spec(300.0, "with async_staleness: seconds the learner waits for a batch before it stops the run", above_zero)

    def check(self) -> None:
        if self.sampler == "vllm" and (self.top_k or self.top_p < 1) and self.temperature != 1:
            raise self.bad("temperature", "must be 1 with top_k/top_p under --sampler vllm: vLLM reports a truncated sample's "
                           "log-prob either over the whole vocabulary at temperature 1 or renormalised over the kept tokens "
                           "(docs/samplers.md)")

    def episode_limits(self) -> Any:
        """The :class:`~unified_rl.environments.Limits` of an episode with these settings."""
        from .environments import Limits

        return Limits(self.max_turns, self.max_episode_tokens, self.max_observation_tokens, self.env_timeout_s)

    def sampler_options(self) -> dict[str, Any]:
        """The ``hf.make_sampler`` options these settings give the sampler."""
        truncation: dict[str, Any] = {}  # set only when on: a sampler of one's own need not know them otherwise
        if self.top_k:
            truncation["top_k"] = self.top_k
        if self.top_p < 1:
            truncation["top_p"] = self.top_p
        if self.sampler != "vllm":
            return truncation
        return dict(gpu_memory_utilization=self.vllm_gpu_memory_utilization, max_model_len=self.vllm_max_model_len,
                    sync_every=self.vllm_sync_every, **truncation)


@dataclass(frozen=True)
class ModelSetup(_Part):
    """How the policy is run: micro-batches, precision, LoRA, activation checkpointing, parallelism."""

    max_tokens: Optional[int] = _spec(4096, "padded tokens per micro-batch forward (rows bucketed by length)", positive)
    share_prefix: bool = _spec(True, "a prompt shared by several rows runs once per training pass (same gradient)")
    packed: bool = _spec(False, "a micro-batch's rows run as one sequence, no padded token computed (same gradient; where "
                                "prompts are not shared)")
    precision: Literal[PRECISIONS] = _spec("fp32", "fp32, or bf16 (autocast: bf16 matmuls, fp32 weights, optimizer and log-softmax)")
    lora_r: Optional[int] = _spec(None, "LoRA rank (needs peft); null: full fine-tuning", positive)
    lora_alpha: Optional[float] = _spec(None, "LoRA scale alpha / r; null: 2 * lora_r", above_zero)
    lora_targets: str = _spec("all-linear", "comma-separated module names, or all-linear (every linear layer but the head)",
                              lambda v: None if [t for t in v.split(",") if t.strip()] else "must name modules, comma-separated, or all-linear")
    lora_dropout: float = _spec(0.0, "dropout on the LoRA adapters' input", lambda v: None if 0 <= v < 1 else "must be a number in [0, 1)")
    gradient_checkpointing: bool = _spec(False, "recompute each layer's activations in the backward (less memory, same gradient)")
    parallel: Literal["auto", "fsdp", "ddp", "none"] = _spec(
        "auto", "auto: FSDP2 under torchrun (sharded, gradients summed over ranks), none in one process; fsdp; ddp; none")

    def check(self) -> None:
        if self.lora_r is None and (self.lora_alpha is not None or self.lora_dropout or self.lora_targets != "all-linear"):
            raise self.bad("lora_r", "is null (full fine-tuning), so the other lora_* settings would have no effect; set lora_r")

    def lora_modules(self) -> Any:
        """``lora_targets`` as peft takes it: ``"all-linear"`` or a list of module names."""
        return self.lora_targets if self.lora_targets == "all-linear" else [t.strip() for t in self.lora_targets.split(",") if t.strip()]


@dataclass(frozen=True)
class RunSetup(_Part):
    """The run's seed, evaluation, checkpoints and outputs."""

    seed: int = _spec(0, "the run's seed: data order, sampling, LoRA and value-model initialisation", at_least_zero)
    eval_every: int = _spec(0, "steps between evaluations of the greedy accuracy (0: only at the end)", at_least_zero)
    eval_size: int = _spec(256, "held-out questions for the greedy accuracy", positive)
    checkpoint_every: int = _spec(50, "steps between checkpoints in out_dir (0: none; Ctrl-C always saves one)", at_least_zero)
    report_to: str = _spec("none", "none, or tensorboard, trackio, wandb (comma-separated): where metrics go besides metrics.jsonl")
    log_completions_every: int = _spec(0, "steps between tables of sample completions (completions.jsonl and report_to; 0: never)",
                                       at_least_zero)
    out_dir: Optional[str] = _spec(None, "the run's folder (metrics, checkpoints, model)")

    def check(self) -> None:
        from .reporting import parse_report_to

        try:
            parse_report_to(self.report_to)
        except ValueError as e:
            raise self.bad("report_to", str(e).removeprefix("report_to: ")) from None


PARTS = {"optim": Optimisation, "sampling": Sampling, "model": ModelSetup, "run": RunSetup}
_HOME = {f.name: part for part, cls in PARTS.items() for f in dataclasses.fields(cls)}  # field -> the part that holds it
_HINTS = {name: hint for cls in PARTS.values() for name, hint in typing.get_type_hints(cls).items()}


@dataclass(frozen=True, init=False)
class TrainConfig:
    """One run of Algorithm 1 (``iterations`` x ``steps``): ``TrainConfig(lr=1e-4, steps=50)`` puts each
    field in its part (``cfg.optim.lr``); parts may also be given whole (``TrainConfig(optim=...)``)."""

    optim: Optimisation
    sampling: Sampling
    model: ModelSetup
    run: RunSetup

    def __init__(self, *, optim: Optional[Optimisation] = None, sampling: Optional[Sampling] = None, model: Optional[ModelSetup] = None,
                 run: Optional[RunSetup] = None, **fields: Any):
        given = {"optim": optim, "sampling": sampling, "model": model, "run": run}
        for name in fields:
            if name in METHOD_KEYS:
                how = ("pass the Method itself to the Trainer (e.g. methods.grpo())" if name == "method" else
                       f"give it to the method's preset (e.g. methods.{'dpo(beta' if name == 'dpo_beta' else 'grpo(' + name}=...))")
                raise ValueError(f"config: {name!r} belongs to the method, not the run: {how}; in a recipe file or on the command "
                                 "line the key stays (unified_rl.apps.recipe builds the method from it)")
            if name not in _HOME:
                raise ValueError(f"config: unknown field {name!r}; known fields are {sorted(_HOME)}")
            if given[_HOME[name]] is not None:
                raise ValueError(f"config: {name!r} given both on its own and inside {_HOME[name]}=")
        for f in all_fields():  # in the parts' order, before a part is built: the first bad field is the one named
            if f.name in fields:
                check_field(f, _HINTS[f.name], fields[f.name])
        for part, cls in PARTS.items():
            mine = {k: v for k, v in fields.items() if _HOME[k] == part}
            object.__setattr__(self, part, given[part] if given[part] is not None else cls(**mine))

    def replace(self, **fields: Any) -> "TrainConfig":
        """A copy with ``fields`` (flat names) changed, checked like a new one."""
        return TrainConfig(**{**self.flat(), **fields})

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (what a run logs as its configuration)."""
        return {f.name: getattr(getattr(self, part), f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Flat fields as a recipe file holds them (types checked)."""
        return cls(**data)

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> "TrainConfig":
        """Read a TOML, YAML or JSON file of run fields; unknown keys are errors. ``overrides`` (non-None) win."""
        data = read_table(path)
        try:
            return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
        except (TypeError, ValueError) as e:
            raise ValueError(f"config file {path!r}: {e}") from None


def all_fields() -> list[dataclasses.Field]:
    """Every field of every part, in the parts' order."""
    return [f for cls in PARTS.values() for f in dataclasses.fields(cls)]


def fields_table() -> str:
    """Every TrainConfig field as a Markdown table (part, name, type, default, meaning): the table in
    docs/configuration.md, generated from the dataclasses (a test keeps the page equal to it)."""
    from .config_table import markdown_table
    return markdown_table(PARTS)
