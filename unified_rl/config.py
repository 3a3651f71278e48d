"""Training configuration, validated field by field before any model is touched."""

import dataclasses
import difflib
import json
import math
import os
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from .names import CORRECTION_MODES, METHOD_NAMES, PRECISIONS, SAMPLER_NAMES


def _check_type(name: str, annotation: Any, value: Any) -> None:
    """``value`` has the field's type: true/false only where a switch is meant (never for a number),
    an integer where a count is meant, text where a name is; None only where the field allows it."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    if value is None and type(None) in allowed:
        return
    kinds = [t for t in allowed if t is not type(None)]
    fits = any(isinstance(value, bool) if t is bool else
               (isinstance(value, int) and not isinstance(value, bool)) if t is int else
               (isinstance(value, (int, float)) and not isinstance(value, bool)) if t is float else isinstance(value, t)
               for t in kinds)
    if not fits:
        want = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(t, t.__name__) for t in kinds)
        null = " (or null)" if type(None) in allowed else ""
        raise ValueError(f"config field {name!r} = {value!r}: must be {want}{null}, not {type(value).__name__}")


@dataclass
class TrainConfig:
    """One run of Algorithm 1 (``iterations`` x ``steps``); every field is checked by :meth:`check`."""

    method: str = field(default="grpo", metadata={"help": 'a name in methods.REGISTRY'})
    steps: int = field(default=100, metadata={"help": 'policy steps per iteration (M)'})
    iterations: int = field(default=1, metadata={"help": 'outer iterations (I): reference reset + reward-model update'})
    questions_per_step: int = field(default=16, metadata={"help": 'questions sampled per step'})
    group_size: Optional[int] = field(default=None,
        metadata={"help": "G (GRPO) / samples per question (RFT, Online RFT, DPO pairs); None: the method's (8)"})
    mu: int = field(default=1, metadata={"help": 'policy updates per batch'})
    lr: float = field(default=3e-5, metadata={"help": 'learning rate of AdamW'})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW's weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": 'steps of linear warmup of the learning rate'})
    schedule: str = field(default="constant", metadata={"help": 'constant | cosine | linear (after warmup)'})
    grad_clip: Optional[float] = field(default=1.0, metadata={"help": "clip the gradient's global norm to this (null: no clipping)"})
    max_tokens: Optional[int] = field(default=4096, metadata={"help": 'padded tokens per micro-batch forward (rows bucketed by length)'})
    max_new_tokens: int = field(default=48, metadata={"help": 'the longest completion sampled, in tokens'})
    max_prompt_tokens: int = field(default=256,
        metadata={"help": 'the longest prompt, in tokens (a longer one is an error naming its row)'})
    temperature: float = field(default=1.0, metadata={"help": 'sampling temperature (log-probs are taken at it too)'})
    top_k: int = field(default=0,
        metadata={"help": 'sample among the k most likely tokens only (0: all); recorded log-probs stay over the whole vocabulary'})
    top_p: float = field(default=1.0,
        metadata={"help": 'sample from the smallest set of tokens holding this probability (1: all); recorded log-probs stay over the whole vocabulary'})
    beta: Optional[float] = field(default=None,
        metadata={"help": "KL coefficient (GRPO k3 in the loss; PPO k1 in the reward); None: the method's default"})
    epsilon: Optional[float] = field(default=None, metadata={"help": "clip range; None: the method's default (0.2 for most, GSPO 3e-4)"})
    dpo_beta: Optional[float] = field(default=None,
        metadata={"help": "beta of the preference losses (dpo, ipo, hinge, simpo); None: the method's default"})
    reset_reference: bool = field(default=True, metadata={"help": 'pi_ref <- pi_theta at each iteration (iterative RL)'})
    reward_replay: float = field(default=0.1, metadata={"help": 'fraction of history replayed when re-training a reward model'})
    share_prefix: bool = field(default=True,
        metadata={"help": 'a prompt shared by several rows runs once per training pass (same gradient)'})
    packed: bool = field(default=False,
        metadata={"help": "a micro-batch's rows run as one sequence, no padded token computed (same gradient; where prompts are not shared)"})
    precision: str = field(default="fp32",
        metadata={"help": 'fp32 | bf16 (autocast: bf16 matmuls, fp32 weights, optimizer and log-softmax)'})
    sampler: str = field(default="static",
        metadata={"help": 'static (lean static-cache decoder) | hf (transformers generate) | vllm (needs unified_rl[vllm])'})
    sampler_correction: str = field(default="auto",
        metadata={"help": 'the mismatch weight on the policy terms: auto (token_truncate for vllm, none otherwise) | none | token_truncate | token_mask | sequence_truncate | sequence_mask'})
    sampler_correction_max: float = field(default=2.0,
        metadata={"help": "the upper bound C of the sampler_correction weight (verl's TIS: 2; TRL's sequence_mask default: 3)"})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": 'the share of GPU memory vLLM takes'})
    vllm_max_model_len: Optional[int] = field(default=None,
        metadata={"help": "prompt + completion tokens vLLM allots per sequence; None: the model's context length"})
    vllm_sync_every: int = field(default=1, metadata={"help": "copy the policy's weights into vLLM before every N-th sampling call"})
    seed: int = field(default=0, metadata={"help": "the run's seed: data order, sampling, LoRA and value-model initialisation"})
    eval_every: int = field(default=0, metadata={"help": 'steps between evaluations of the greedy accuracy (0: only at the end)'})
    eval_size: int = field(default=256, metadata={"help": 'held-out questions for the greedy accuracy'})
    checkpoint_every: int = field(default=50, metadata={"help": 'steps between checkpoints in out_dir (0: none; Ctrl-C always saves one)'})
    lora_r: Optional[int] = field(default=None, metadata={"help": 'LoRA rank (needs peft); None: full fine-tuning'})
    lora_alpha: Optional[float] = field(default=None, metadata={"help": 'LoRA scale alpha / r; None: 2 * lora_r'})
    lora_targets: str = field(default="all-linear",
        metadata={"help": 'comma-separated module names, or all-linear (every linear layer but the head)'})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA adapters' input"})
    gradient_checkpointing: bool = field(default=False,
        metadata={"help": "recompute each layer's activations in the backward (less memory, same gradient)"})
    parallel: str = field(default="auto",
        metadata={"help": 'auto: FSDP2 under torchrun (sharded, gradients summed over ranks), none in one process; fsdp; ddp; none'})
    report_to: str = field(default="none",
        metadata={"help": 'none, or tensorboard, trackio, wandb (comma-separated): where metrics go besides metrics.jsonl'})
    log_completions_every: int = field(default=0,
        metadata={"help": 'steps between tables of sample completions (completions.jsonl and report_to; 0: never)'})
    out_dir: Optional[str] = field(default=None, metadata={"help": "the run's folder (metrics, checkpoints, model)"})

    def check(self) -> "TrainConfig":
        """Validate every field; raise a ValueError naming the first bad one. Returns ``self``."""
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"config field {field!r} = {getattr(self, field)!r}: {why}")

        loaded = sys.modules.get("unified_rl.methods")  # a method registered in Python: the registry is loaded already
        known = list(loaded.REGISTRY) if loaded is not None else list(METHOD_NAMES)  # else the built-in names (no torch import)
        if self.method not in known:
            close = difflib.get_close_matches(self.method.replace("-", "_"), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise bad("method", f"unknown method{hint}; choose one of {', '.join(known)}")
        for f in ("steps", "iterations", "questions_per_step", "group_size", "mu", "max_new_tokens", "max_prompt_tokens", "eval_size"):
            if f == "group_size" and self.group_size is None:
                continue
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise bad(f, "must be a positive integer")
        for f in ("lr", "temperature", "dpo_beta"):
            if f == "dpo_beta" and self.dpo_beta is None:
                continue
            if not (isinstance(getattr(self, f), (int, float)) and math.isfinite(getattr(self, f)) and getattr(self, f) > 0):
                raise bad(f, "must be a finite number > 0")
        for f in ("beta", "epsilon", "weight_decay", "reward_replay"):
            if f in ("beta", "epsilon") and getattr(self, f) is None:
                continue
            if not (isinstance(getattr(self, f), (int, float)) and math.isfinite(getattr(self, f)) and getattr(self, f) >= 0):
                raise bad(f, "must be a finite number >= 0")
        if self.reward_replay > 1:
            raise bad("reward_replay", "is a fraction, at most 1")
        if self.method.startswith("grpo") and self.group_size is not None and self.group_size < 2:
            raise bad("group_size", "GRPO needs G >= 2 samples per question for a group-relative advantage")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise bad("schedule", "choose constant, cosine or linear")
        if self.lora_r is not None and (not isinstance(self.lora_r, int) or isinstance(self.lora_r, bool) or self.lora_r < 1):
            raise bad("lora_r", "must be a positive integer or null")
        if self.lora_alpha is not None and not (isinstance(self.lora_alpha, (int, float)) and math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise bad("lora_alpha", "must be a finite number > 0 or null")
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            raise bad("lora_dropout", "must be a number in [0, 1)")
        if not isinstance(self.lora_targets, str) or not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise bad("lora_targets", "must name modules, comma-separated, or all-linear")
        if self.lora_r is None and (self.lora_alpha is not None or self.lora_dropout or self.lora_targets != "all-linear"):
            raise bad("lora_r", "is null (full fine-tuning), so the other lora_* settings would have no effect; set lora_r")
        for f in ("share_prefix", "packed", "reset_reference", "gradient_checkpointing"):
            if not isinstance(getattr(self, f), bool):
                raise bad(f, "must be true or false")
        if self.sampler not in SAMPLER_NAMES:
            raise bad("sampler", f"choose one of {', '.join(SAMPLER_NAMES)}")
        if self.sampler_correction not in ("auto", "none", *CORRECTION_MODES):
            raise bad("sampler_correction", f"choose auto, none, {', '.join(CORRECTION_MODES)}")
        if not (isinstance(self.sampler_correction_max, (int, float)) and math.isfinite(self.sampler_correction_max)
                and self.sampler_correction_max > 0):
            raise bad("sampler_correction_max", "must be a finite number > 0")
        if not (isinstance(self.vllm_gpu_memory_utilization, (int, float)) and 0 < self.vllm_gpu_memory_utilization <= 1):
            raise bad("vllm_gpu_memory_utilization", "must be a fraction in (0, 1]")
        if self.vllm_max_model_len is not None and (not isinstance(self.vllm_max_model_len, int) or self.vllm_max_model_len < 1):
            raise bad("vllm_max_model_len", "must be a positive integer or null")
        if not isinstance(self.vllm_sync_every, int) or self.vllm_sync_every < 1:
            raise bad("vllm_sync_every", "must be a positive integer")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise bad("top_k", "must be an integer >= 0 (0: no top-k)")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise bad("top_p", "must be a number in (0, 1] (1: no top-p)")
        if self.sampler == "vllm" and (self.top_k or self.top_p < 1) and self.temperature != 1:
            raise bad("temperature", "must be 1 with top_k/top_p under --sampler vllm: vLLM reports a truncated sample's log-prob "
                      "either over the whole vocabulary at temperature 1 or renormalised over the kept tokens (docs/samplers.md)")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"choose one of {', '.join(PRECISIONS)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "must be > 0 or null")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise bad("max_tokens", "must be >= 1 or null")
        if self.parallel not in ("auto", "fsdp", "ddp", "none"):
            raise bad("parallel", "choose auto, fsdp, ddp or none")
        if not isinstance(self.report_to, str):
            raise bad("report_to", "must be a comma-separated list of backends, or none")
        from .reporting import parse_report_to

        try:
            parse_report_to(self.report_to)
        except ValueError as e:
            raise bad("report_to", str(e).removeprefix("report_to: ")) from None
        for f in ("warmup_steps", "eval_every", "checkpoint_every", "seed", "log_completions_every"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                raise bad(f, "must be an integer >= 0")
        return self

    def sampler_options(self) -> dict[str, Any]:
        """The ``hf.make_sampler`` options this config sets for its sampler."""
        truncation: dict[str, Any] = {}  # set only when on: a sampler of one's own need not know them otherwise
        if self.top_k:
            truncation["top_k"] = self.top_k
        if self.top_p < 1:
            truncation["top_p"] = self.top_p
        if self.sampler != "vllm":
            return truncation
        return dict(gpu_memory_utilization=self.vllm_gpu_memory_utilization, max_model_len=self.vllm_max_model_len,
                    sync_every=self.vllm_sync_every, **truncation)

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> "TrainConfig":
        """Read a TOML, YAML or JSON file; unknown keys are errors. ``overrides`` (non-None) win."""
        data = read_table(path)
        try:
            return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}})
        except (TypeError, ValueError) as e:
            raise ValueError(f"config file {path!r}: {e}") from None

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown field(s) {unknown}; known fields are {sorted(known)}")
        for f in dataclasses.fields(cls):
            if f.name in data:
                _check_type(f.name, f.type, data[f.name])
        return cls(**data).check()


def fields_table() -> str:
    """Every TrainConfig field as a Markdown table (name, type, default, meaning): the table in
    docs/configuration.md, generated from the dataclass (a test keeps the page equal to it)."""
    def type_name(t: Any) -> str:
        args = typing.get_args(t)
        return f"{type_name(args[0])} or null" if type(None) in args else getattr(t, "__name__", str(t))

    rows = [f"| `{f.name}` | {type_name(f.type)} | `{f.default!r}` | {f.metadata['help'].replace('|', '/')} |"
            for f in dataclasses.fields(TrainConfig)]
    return "\n".join(["| field | type | default | meaning |", "|---|---|---|---|", *rows])


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of settings, not data


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


def _strict_yaml(stream) -> Any:
    """``yaml.safe_load`` that also refuses a key given twice and anchors/aliases (a few lines of
    aliases can expand to gigabytes)."""
    import yaml

    class Strict(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ValueError(f"line {self.peek_event().start_mark.line + 1}: an alias (*name); write the value out instead")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ValueError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(stream, Loader=Strict)  # noqa: S506 -- a SafeLoader subclass


def read_table(path: str) -> dict[str, Any]:
    """The key/value table of a TOML, YAML (.yaml, .yml) or JSON config file, read strictly: no key
    twice, no YAML aliases, at most 1 MiB; a clear error naming the file otherwise. YAML is read
    with a safe loader (no Python objects are built)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    if os.path.getsize(path) > MAX_RECIPE_BYTES:
        raise ValueError(f"config file {path!r}: {os.path.getsize(path)} bytes, over the {MAX_RECIPE_BYTES} a recipe may have")
    try:
        with open(path, "rb") as f:
            if path.endswith(".toml"):
                data = tomllib.load(f)
            elif path.endswith((".yaml", ".yml")):
                data = _strict_yaml(f)
            else:
                data = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"config file {path!r} cannot be read: {' '.join(str(e).split())}") from None
    except Exception as e:  # yaml.YAMLError, imported lazily
        if type(e).__module__.startswith("yaml"):
            raise ValueError(f"config file {path!r} cannot be read: {' '.join(str(e).split())}") from None
        raise
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r}: expected a table of TrainConfig fields, got {type(data).__name__}")
    return data
