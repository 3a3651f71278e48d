"""The registries of names, kept where nothing heavy is imported (``unified-rl --help``, a recipe's
checks and the configuration's choices load no torch). Each table here is the one list of its names:
an entry that points at code names it as ``"module:attribute"``, loaded on first use, and a name a
script registers joins the same table.

* :data:`METHODS` -- training methods (``methods.register`` adds one; ``methods.build`` builds one);
* :data:`SAMPLERS` -- samplers by name (``hf.make_sampler``);
* :data:`PRECISIONS` -- the precisions ``precision.autocast`` knows;
* :data:`CORRECTION_MODES` -- the sampler-mismatch weights of ``coefficients.sampler_correction``.
"""

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

PRECISIONS = ("fp32", "bf16")
CORRECTION_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
SAMPLERS: dict[str, str] = {"static": "unified_rl.hf.sampling:StaticCacheSampler", "hf": "unified_rl.hf.sampling:HFSampler",
                            "vllm": "unified_rl.hf.vllm_sampler:VLLMSampler"}  # vLLM: an optional extra, imported when asked for


def load(target: Union[str, Callable]) -> Any:
    """The object a ``"module:attribute"`` entry names (a callable given directly is returned as it is)."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Entry:
    """A registered method: its preset (a callable, or ``"module:function"`` loaded on first use), a
    one-line summary, and the recipe keys the preset takes under another parameter name
    (``{"dpo_beta": "beta"}``; a key renamed to None is refused)."""

    name: str
    target: Union[str, Callable]
    summary: str
    renames: Mapping[str, Optional[str]] = field(default_factory=dict)

    @property
    def preset(self) -> Callable:
        """The preset function (imported on first use)."""
        return load(self.target)

    def parameter(self, key: str) -> Optional[str]:
        """The preset's parameter that the recipe key ``key`` sets (None: the preset takes no such setting)."""
        name = self.renames.get(key, key)
        return name if name is not None and name in inspect.signature(self.preset).parameters else None


METHODS: dict[str, Entry] = {}


def register(name: str, preset: Union[str, Callable], summary: str, renames: Optional[Mapping[str, Optional[str]]] = None) -> None:
    """Add a method name (CLI ``--method``, a recipe's ``method``, docs); a name registered twice is an error."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered already (by {METHODS[name].target})")
    METHODS[name] = Entry(name, preset, summary, dict(renames or {}))


_PAIRS = {"group_size": "samples_per_question", "dpo_beta": "beta", "beta": None}  # a pair method's beta is the recipe's dpo_beta
_SAMPLES = {"group_size": "samples_per_question"}
for _name, _where, _summary, _renames in (
    ("sft", "paper", "supervised fine-tuning, GC = 1", None),
    ("rft", "paper", "rejection sampling from the frozen SFT model, GC = 1[correct]", _SAMPLES),
    ("online_rft", "paper", "rejection sampling from the current policy", _SAMPLES),
    ("dpo", "paper", "direct preference optimisation on sampled pairs", _PAIRS),
    ("ppo", "paper", "clipped surrogate, GAE with a value model, KL in the reward", None),
    ("grpo", "paper", "group-normalised outcome reward, clip, k3 KL", None),
    ("grpo_process", "paper", "GRPO with process supervision (normalised step rewards)", None),
    ("dr_grpo", "variants", "Dr. GRPO: no std division, w = 1/(B L_max)", None),
    ("dapo", "variants", "DAPO: clip-higher, token mean over the batch", None),
    ("bnpo", "variants", "token mean over the batch", None),
    ("gspo", "variants", "GSPO: one clipped ratio per sequence (geometric mean)", None),
    ("luspo", "variants", "LUSPO: GSPO's ratio, summed over tokens", None),
    ("cispo", "variants", "CISPO: stop-gradient clipped IS weight, every token kept", None),
    ("sapo", "variants", "SAPO: a soft sigmoid gate in place of the clip", None),
    ("rloo", "variants", "RLOO: leave-one-out baseline, k1 KL in the reward, sequence ratio", None),
    ("reinforce_pp", "variants", "REINFORCE++: per-token KL in the reward, returns whitened over the batch", None),
    ("ipo", "preference", "IPO: squared margin loss on pairs", _PAIRS),
    ("hinge", "preference", "hinge (SLiC) loss on pairs", _PAIRS),
    ("simpo", "preference", "SimPO: reference-free, length-normalised pairs", _PAIRS),
    ("orpo", "preference", "ORPO: chosen NLL plus an odds-ratio term on pairs, no reference", _PAIRS),
    ("online_dpo", "preference", "online DPO: two samples of the current policy ranked by reward, DPO's loss", {"dpo_beta": "beta", "beta": None}),
    ("kto", "preference", "KTO: unpaired desirable / undesirable rows against a KL reference point", _PAIRS),
    ("gkd", "distillation", "GKD: generalized JSD to a teacher over the vocabulary, on- and off-policy", None),
    ("distill", "distillation", "on-policy distillation: JSD (reverse KL) to a teacher over the vocabulary", None),
    ("opd", "distillation", "on-policy distillation as a sampled reverse KL: GC = log pi_T - log pi on each sampled token", _SAMPLES),
):
    register(_name, f"unified_rl.methods.{_where}:{_name}", _summary, _renames)
