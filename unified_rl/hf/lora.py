"""LoRA through PEFT (the ``[peft]`` extra): adapters on a transformers model, the reference
policy as the same model with its adapters off (no second copy), and adapter-only checkpoints.

The rest of the ``hf/`` floor runs a ``PeftModel`` through :func:`unwrap`: the transformers model
inside it, whose linear layers carry the adapters (PEFT injects them in place), so the chunked
head, the prompt pass and the samplers see the adapted model.
"""

import contextlib
import sys
import warnings
from typing import Any, Iterator, Optional, Sequence, Union

from torch import Tensor, nn

# PEFT asks transformers for the attribute its 5.x series renamed; nothing to act on here.
_PEFT_NOISE = r"`is_gradient_checkpointing` is deprecated"


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA needs the peft library: pip install 'unified_rl[peft]'") from e
    return peft


def is_peft(model: Any) -> bool:
    """True for a PEFT ``PeftModel`` (checked without importing peft when nothing did yet)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a ``PeftModel`` (its adapters active, as injected), else ``model``."""
    return model.get_base_model() if is_peft(model) else model


def add_lora(model: nn.Module, *, r: int = 16, alpha: Optional[float] = None, targets: Union[str, Sequence[str]] = "all-linear",
             dropout: float = 0.0) -> nn.Module:
    """``model`` with LoRA adapters of rank ``r`` (scale ``alpha / r``; ``alpha`` defaults to 2r) on
    ``targets`` (module names, or ``"all-linear"``: every linear layer but the output head). Only
    the adapters require grad afterwards. The model's own modules are changed in place."""
    peft = _peft()
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}")
    if is_peft(model):
        raise ValueError("add_lora: the model has adapters already")
    targets = targets if isinstance(targets, str) else list(targets)
    config = peft.LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules=targets, lora_dropout=dropout,
                             task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_NOISE, category=FutureWarning)
        try:
            return peft.get_peft_model(model, config)
        except ValueError as e:  # e.g. a target module name the model does not have
            raise ValueError(f"LoRA targets {targets!r}: {str(e).splitlines()[0]}") from None


def adapters_off(model: nn.Module) -> contextlib.AbstractContextManager:
    """A context in which a ``PeftModel`` computes its base model (adapters disabled); for any
    other model, a context that changes nothing."""
    return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()


def trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that requires grad: what the optimizer updates."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def policy_state(model: nn.Module) -> dict[str, Tensor]:
    """What a checkpoint keeps of the policy: every tensor, or for a ``PeftModel`` its adapters only
    (the frozen base model is the one the run was started from)."""
    if is_peft(model):
        return {n: p.detach() for n, p in trainable(model)}
    return model.state_dict()


def load_policy_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Restore :func:`policy_state`; for a ``PeftModel`` every adapter tensor must be there."""
    if not is_peft(model):
        model.load_state_dict(state)
        return
    names = {n for n, _ in trainable(model)}
    if set(state) != names:
        missing, extra = sorted(names - set(state)), sorted(set(state) - names)
        raise ValueError(f"adapter state does not fit this LoRA model: missing {missing[:2]}, unexpected {extra[:2]} "
                         "(another rank or targets?)")
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys


def merged(model: nn.Module) -> nn.Module:
    """A ``PeftModel``'s adapters merged into its weights, as a plain transformers model (in place:
    the PeftModel is spent); any other model as it is."""
    return model.merge_and_unload() if is_peft(model) else model
