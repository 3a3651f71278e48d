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



# Float fields that must be finite wherever this mask (a field name; None: everywhere) is True.
_FINITE_WHERE = {
    "rewards": "scored",
    "step_rewards": "step_mask",
    "old_logprobs": "completion_mask",
    "ref_logprobs": "completion_mask",
    "teacher_logprobs": "completion_mask",
    "sampler_logprobs": "completion_mask",
    "entropies": "completion_mask",
    "advantages": "completion_mask",
    "returns": "completion_mask",
    "values": "completion_mask",
    "weights": "completion_mask",
    "reference_point": None,
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


def _doc(meaning: str, required: bool = False, default: Any = None) -> Any:
    """A Rollout field with its meaning (docs/notation.md's table is generated from these)."""
    if required:
        return field(metadata={"doc": meaning})
    return field(default=default, metadata={"doc": meaning})


@no_type_check  # validated by __post_init__ with messages that name field, sample and position
@dataclass(frozen=True, eq=False)
class Rollout:
    """A batch of (question, output) sequences and everything computed about them.

    Required: ``input_ids``, ``attention_mask`` and ``completion_mask``. Optional fields stay
    ``None`` until a stage (reward, reference pass, ``GradientCoefficient.prepare``) fills them.
    Each field's shape and meaning are declared once, below, and everything else is read from
    there: the shape checks, what a coefficient's ``needs`` may name (:data:`RolloutField`) and
    the table in docs/notation.md (:func:`fields_table`).
    """

    input_ids: Int[Tensor, "batch seq"] = _doc("prompt + completion tokens", required=True)
    attention_mask: Bool[Tensor, "batch seq"] = _doc("real tokens (False at padding)", required=True)
    completion_mask: Bool[Tensor, "batch seq"] = _doc("output tokens $o_t$ (never position 0, never padding)", required=True)
    group_ids: Optional[Int[Tensor, "batch"]] = _doc("which question a sample answers (a GRPO group, a DPO pair)")
    rewards: Optional[Float[Tensor, "batch"]] = _doc("outcome reward per sequence")
    scored: Optional[Bool[Tensor, "batch"]] = _doc("False where a reward function could not score a sample (left out of "
                                                   "baselines, never counted as 0)")
    step_rewards: Optional[Float[Tensor, "batch seq"]] = _doc("process reward at each step's last token")
    step_mask: Optional[Bool[Tensor, "batch seq"]] = _doc("where ``step_rewards`` holds a step's reward")
    old_logprobs: Optional[Float[Tensor, "batch seq"]] = _doc("$\\log\\pi_{\\theta_{old}}$ of the sampled tokens")
    ref_logprobs: Optional[Float[Tensor, "batch seq"]] = _doc("$\\log\\pi_{ref}$ of the sampled tokens")
    teacher_logprobs: Optional[Float[Tensor, "batch seq"]] = _doc("$\\log\\pi_{T}$ of the sampled tokens under the run's teacher "
                                                                  "(on-policy distillation)")
    sampler_logprobs: Optional[Float[Tensor, "batch seq"]] = _doc("the sampler's own log-probs of the sampled tokens, recorded at sampling (differ "
                                                                  "from pi_old's where the sampler is another engine, e.g. vLLM)")
    chosen: Optional[Bool[Tensor, "batch"]] = _doc("DPO: $o^+$ (True) or $o^-$; KTO: desirable (True) or undesirable")
    kl_sample: Optional[Bool[Tensor, "batch"]] = _doc("KTO: a mismatched (question, completion) row that only estimates the "
                                                      "reference point $z_0$ (weight 0, no gradient)")
    reference_point: Optional[Float[Tensor, "batch"]] = _doc("KTO: the reference point $z_0$ (a KL estimate from the "
                                                             "``kl_sample`` rows), filled by ``prepare``")
    truncated: Optional[Bool[Tensor, "batch"]] = _doc("a sampled completion cut at ``max_new_tokens`` before eos")
    versions: Optional[Int[Tensor, "batch"]] = _doc("the policy version (learner steps done) that sampled each row (asynchronous "
                                                    "rollouts)")
    entropies: Optional[Float[Tensor, "batch seq"]] = _doc("the policy's entropy $H(\\pi(\\cdot \\mid q, o_{<t}))$ at each output "
                                                           "token (filled when a piece needs it)")
    keep: Optional[Bool[Tensor, "batch seq"]] = _doc("the tokens that masks deciding on the whole batch keep (filled by "
                                                     "``prepare``, e.g. the top-entropy mask)")
    advantages: Optional[Float[Tensor, "batch seq"]] = _doc("filled by ``prepare``")
    values: Optional[Float[Tensor, "batch seq"]] = _doc("the critic's $V(s_t)$ at sampling, at the position of token t (PPO; filled "
                                                        "by the learner)")
    returns: Optional[Float[Tensor, "batch seq"]] = _doc("PPO's value targets, filled by ``prepare``")
    weights: Optional[Float[Tensor, "batch seq"]] = _doc("aggregation weights, computed once from the **whole** batch")
    texts: Optional[tuple[Sample, ...]] = _doc("prompt, completion and dataset columns per sample, for rewards and logs")
    temperature: float = _doc("the softmax temperature the completions were sampled at (1 for dataset completions); "
                              "every log-prob pass reads it from here", default=1.0)

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
            mask = getattr(self, mask_name) if mask_name else None
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

    def _part(self, index: Optional[Tensor], rows: list[int], lo: int, hi: int) -> "Rollout":
        """``select(rows).columns(lo, hi)`` with [lo, hi) the selection's ``used_columns()`` (``index``:
        ``rows`` on the device; None: every row, in order), built without ``__post_init__``'s checks,
        which read values back from the device: such a part of a checked rollout is valid by
        construction (micro-batch views, ``batching.micro_batch_views``)."""
        out = object.__new__(Rollout)
        for f in _SPEC:
            value = getattr(self, f)
            object.__setattr__(out, f, None if value is None else _window(f, value if index is None else value[index], lo, hi))
        texts = self.texts if index is None or self.texts is None else tuple(self.texts[i] for i in rows)
        object.__setattr__(out, "texts", texts)
        object.__setattr__(out, "temperature", self.temperature)
        return out

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
            **{f: (None if getattr(self, f) is None else _window(f, getattr(self, f), lo, hi)) for f in _SPEC},
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


def _tensor_type(annotation: Any) -> Any:
    """The jaxtyping type of a field (``Optional[Float[Tensor, "batch"]]`` -> ``Float[Tensor, "batch"]``), or None."""
    inner = [a for a in get_args(annotation) if a is not type(None)] if get_args(annotation) else [annotation]
    return inner[0] if hasattr(inner[0], "dim_str") else None


# field -> (axes, dtype kind), read from the annotations above; "batch" and "seq" come from input_ids.
_SPEC: dict[str, tuple[tuple[str, ...], str]] = {
    f.name: (tuple(t.dim_str.split()), t.dtype.__name__.lower())
    for f in dataclasses.fields(Rollout) if (t := _tensor_type(f.type)) is not None
}


def _window(name: str, value: Tensor, lo: int, hi: int) -> Tensor:
    """Columns [lo, hi) of field ``name`` if it is per token, else the whole field."""
    return value[:, lo:hi] if len(_SPEC[name][0]) == 2 else value


# The names a coefficient's ``needs`` may hold (checked at construction by protocols.check_needs).
RolloutField = Literal[tuple(_SPEC)]


def fields_table() -> str:
    """Every Rollout field as a Markdown table (field, shape, meaning): docs/notation.md's table,
    generated from the class (a test keeps the page equal to it)."""
    rows = ["| field | shape | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Rollout):
        spec = _SPEC.get(f.name)
        shape = f"{spec[1].capitalize()} `{' '.join(spec[0])}`" if spec else ("tuple of `Sample`" if f.name == "texts" else f"`{f.type.__name__}`")
        rows.append(f"| `{f.name}` | {shape} | {f.metadata['doc'].replace('``', '`')} |")
    return "\n".join(rows)
