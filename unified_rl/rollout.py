"""`Rollout`: the one batch type that flows from data source to engine.

Every per-token tensor is ``[batch, seq]`` and aligned with ``input_ids``: position ``t`` holds
the value for token ``input_ids[:, t]`` (which the model predicts from the tokens before it).
Construction validates shapes, dtypes and finiteness and says what was expected and what came.
NaN/inf are allowed only where a mask says the slot is unused (they are never read there).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_args, no_type_check

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor



# field -> (axes, dtype kind); "batch" and "seq" come from input_ids.
_SPEC: dict[str, tuple[tuple[str, ...], str]] = {
    "input_ids": (("batch", "seq"), "int"),
    "attention_mask": (("batch", "seq"), "bool"),
    "completion_mask": (("batch", "seq"), "bool"),
    "group_ids": (("batch",), "int"),
    "rewards": (("batch",), "float"),
    "scored": (("batch",), "bool"),
    "step_rewards": (("batch", "seq"), "float"),
    "step_mask": (("batch", "seq"), "bool"),
    "old_logprobs": (("batch", "seq"), "float"),
    "ref_logprobs": (("batch", "seq"), "float"),
    "sampler_logprobs": (("batch", "seq"), "float"),
    "chosen": (("batch",), "bool"),
    "truncated": (("batch",), "bool"),
    "entropies": (("batch", "seq"), "float"),
    "keep": (("batch", "seq"), "bool"),
    "advantages": (("batch", "seq"), "float"),
    "returns": (("batch", "seq"), "float"),
    "weights": (("batch", "seq"), "float"),
}
# The names a coefficient's ``needs`` may hold (checked at construction by protocols.check_needs).
RolloutField = Literal["input_ids", "attention_mask", "completion_mask", "group_ids", "rewards", "scored", "step_rewards", "step_mask",
                       "old_logprobs", "ref_logprobs", "sampler_logprobs", "chosen", "truncated", "entropies", "keep", "advantages", "returns", "weights"]
assert set(get_args(RolloutField)) == set(_SPEC)
# Float fields that must be finite wherever this mask (a field name) is True.
_FINITE_WHERE = {
    "rewards": "scored",
    "step_rewards": "step_mask",
    "old_logprobs": "completion_mask",
    "ref_logprobs": "completion_mask",
    "sampler_logprobs": "completion_mask",
    "entropies": "completion_mask",
    "advantages": "completion_mask",
    "returns": "completion_mask",
    "weights": "completion_mask",
}


def _kind(t: Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_floating_point():
        return "float"
    return "int" if not t.is_complex() else "complex"


@dataclass(frozen=True)
class Sample:
    """The text side of one sequence: what reward functions and logs read."""

    prompt: str
    completion: str
    columns: dict[str, Any] = field(default_factory=dict)


@no_type_check  # validated by __post_init__ with messages that name field, sample and position
@dataclass(frozen=True, eq=False)
class Rollout:
    """A batch of (question, output) sequences and everything computed about them.

    Required: ``input_ids`` (prompt + completion tokens), ``attention_mask`` (real tokens) and
    ``completion_mask`` (True at output tokens o_t). Optional fields stay ``None`` until a stage
    (reward, reference pass, ``GradientCoefficient.prepare``) fills them:

    ``group_ids`` which question a sample answers (GRPO groups, DPO pairs); ``rewards`` outcome
    reward per sequence; ``scored`` False where a reward function could not score a sample
    (excluded from group baselines, never counted as 0); ``step_rewards``/``step_mask`` process
    rewards at each step's last token; ``old_logprobs``/``ref_logprobs`` log pi_old and log pi_ref
    of the sampled tokens; ``sampler_logprobs`` the sampler's own log-probs of them (recorded at
    sampling; differ from pi_old's where the sampler is another engine, e.g. vLLM); ``chosen`` DPO o+ (True) or o- (False); ``truncated`` True where a sampled completion was cut at
    ``max_new_tokens`` before eos; ``entropies`` the policy's entropy H(pi(. | q, o_<t)) at each output
    token (filled when a piece needs it); ``keep`` the tokens that masks decided on the whole batch
    keep (filled by ``prepare``, e.g. the top-entropy mask); ``advantages``, ``returns``
    (PPO value targets) and ``weights`` (aggregation weights, computed once from the whole batch).
    ``temperature``: the softmax temperature the completions were sampled at (1 for dataset
    completions); the engine and the reference pass compute log-probs at this temperature.
    """

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Bool[Tensor, "batch seq"]
    completion_mask: Bool[Tensor, "batch seq"]
    group_ids: Optional[Int[Tensor, "batch"]] = None
    rewards: Optional[Float[Tensor, "batch"]] = None
    scored: Optional[Bool[Tensor, "batch"]] = None
    step_rewards: Optional[Float[Tensor, "batch seq"]] = None
    step_mask: Optional[Bool[Tensor, "batch seq"]] = None
    old_logprobs: Optional[Float[Tensor, "batch seq"]] = None
    ref_logprobs: Optional[Float[Tensor, "batch seq"]] = None
    sampler_logprobs: Optional[Float[Tensor, "batch seq"]] = None
    chosen: Optional[Bool[Tensor, "batch"]] = None
    truncated: Optional[Bool[Tensor, "batch"]] = None
    entropies: Optional[Float[Tensor, "batch seq"]] = None
    keep: Optional[Bool[Tensor, "batch seq"]] = None
    advantages: Optional[Float[Tensor, "batch seq"]] = None
    returns: Optional[Float[Tensor, "batch seq"]] = None
    weights: Optional[Float[Tensor, "batch seq"]] = None
    texts: Optional[tuple[Sample, ...]] = None
    temperature: float = 1.0

    @classmethod
    def field_names(cls) -> frozenset:
        """Names of the tensor fields (what a coefficient's ``needs`` may name)."""
        return frozenset(_SPEC)

    def __post_init__(self) -> None:
        ids = self.input_ids
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"Rollout.input_ids: expected a [batch, seq] tensor, got {got}")
        dims = {"batch": ids.shape[0], "seq": ids.shape[1]}
        for name, (axes, kind) in _SPEC.items():
            value = getattr(self, name)
            if value is None:
                continue
            expected = tuple(dims[a] for a in axes)
            axes_txt = ", ".join(f"{a}={dims[a]}" for a in axes)
            if not isinstance(value, Tensor):
                raise TypeError(f"Rollout.{name}: expected a {kind} tensor [{axes_txt}], got {type(value).__name__}")
            if tuple(value.shape) != expected or _kind(value) != kind:
                raise ValueError(
                    f"Rollout.{name}: expected shape [{axes_txt}] ({kind}), "
                    f"got {list(value.shape)} ({value.dtype})"
                )
            if value.device != ids.device:
                raise ValueError(f"Rollout.{name}: on {value.device}, but input_ids is on {ids.device}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not 0 < self.temperature < float("inf"):
            raise ValueError(f"Rollout.temperature: expected a finite number > 0, got {self.temperature!r}")
        if self.texts is not None and len(self.texts) != dims["batch"]:
            raise ValueError(f"Rollout.texts: expected {dims['batch']} samples, got {len(self.texts)}")
        if ids.shape[1] and bool(self.completion_mask[:, 0].any()):
            row = int(self.completion_mask[:, 0].nonzero()[0, 0])
            raise ValueError(f"Rollout.completion_mask: sample {row} marks position 0 as output; the first token has no context")
        first = self.attention_mask.long().argmax(-1)  # each row's first real token (left padding moves it)
        starts_as_output = self.completion_mask.gather(1, first[:, None]).squeeze(1) & self.attention_mask.any(-1)
        if ids.shape[1] and bool(starts_as_output.any()):
            row = int(starts_as_output.nonzero()[0, 0])
            raise ValueError(f"Rollout.completion_mask: sample {row} marks its first real token (position {int(first[row])}) as output; "
                             "the first token has no context")
        if bool((self.completion_mask & ~self.attention_mask).any()):
            row = int((self.completion_mask & ~self.attention_mask).any(1).nonzero()[0, 0])
            raise ValueError(f"Rollout.completion_mask: sample {row} marks a padding token (attention_mask False) as output")
        for name, mask_name in _FINITE_WHERE.items():
            value = getattr(self, name)
            if value is None:
                continue
            mask = getattr(self, mask_name)
            if mask is None:
                mask = torch.ones_like(value, dtype=torch.bool)
            bad = mask & ~torch.isfinite(value)
            if bool(bad.any()):
                where = bad.nonzero()[0].tolist()
                at = f"sample {where[0]}" + (f", position {where[1]}" if len(where) > 1 else "")
                raise ValueError(f"Rollout.{name}: non-finite value {value[tuple(where)].item()} at {at}")

    # ----------------------------------------------------------------- views and edits
    def replace(self, **changes: Optional[Tensor]) -> "Rollout":
        """A new, validated rollout with some fields replaced (the original is unchanged)."""
        return dataclasses.replace(self, **changes)

    def select(self, index: "slice | Tensor | list[int]") -> "Rollout":
        """Rows ``index`` of every tensor (weights keep their whole-batch values)."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long, device=self.input_ids.device)
        texts = None
        if self.texts is not None:
            rows = range(self.batch_size)[index] if isinstance(index, slice) else index.tolist()
            texts = tuple(self.texts[i] for i in (rows if not isinstance(rows, int) else [rows]))
        return Rollout(**{f: (None if getattr(self, f) is None else getattr(self, f)[index]) for f in _SPEC}, texts=texts,
                       temperature=self.temperature)

    def to(self, device: "torch.device | str") -> "Rollout":
        """The same rollout on ``device``."""
        return Rollout(**{f: (None if getattr(self, f) is None else getattr(self, f).to(device)) for f in _SPEC}, texts=self.texts,
                       temperature=self.temperature)

    def used_columns(self) -> tuple[int, int]:
        """[lo, hi): the columns that are a real token in at least one row."""
        used = self.attention_mask.any(0).nonzero()
        if len(used) == 0:
            return 0, self.input_ids.shape[1]
        return int(used[0]), int(used[-1]) + 1

    def columns(self, lo: int, hi: int) -> "Rollout":
        """Columns [lo, hi) of every per-token tensor."""
        return Rollout(
            **{f: (None if getattr(self, f) is None else (getattr(self, f)[:, lo:hi] if len(_SPEC[f][0]) == 2 else getattr(self, f))) for f in _SPEC},
            texts=self.texts, temperature=self.temperature,
        )

    def trim(self) -> "Rollout":
        """Drop columns that are padding in every row (left and right)."""
        lo, hi = self.used_columns()
        return self if (lo, hi) == (0, self.input_ids.shape[1]) else self.columns(lo, hi)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def completion_lengths(self) -> Int[Tensor, "batch"]:
        """|o_i|: number of output tokens of each sequence."""
        return self.completion_mask.sum(-1)

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask.sum())

    def fields(self) -> dict[str, Tensor]:
        """The filled fields, by name."""
        return {f: getattr(self, f) for f in _SPEC if getattr(self, f) is not None}

    def __repr__(self) -> str:
        filled = ", ".join(f for f in _SPEC if getattr(self, f) is not None)
        return f"Rollout(batch={self.input_ids.shape[0]}, seq={self.input_ids.shape[1]}, temperature={self.temperature}, fields=[{filled}])"
