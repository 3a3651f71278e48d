"""Building a registered method (the registry itself, ``names.METHODS``, loads no torch).

A preset registers with its own signature; :func:`build` calls it with the settings a recipe or the
command line gives (``group_size``, ``beta``, ``epsilon``, ``dpo_beta``), each passed to the
preset's parameter of that name unless the entry renames it (the pair methods take ``group_size``
as ``samples_per_question`` and ``dpo_beta`` as their ``beta``)."""

import inspect
from typing import Any, Optional

from ..config import METHOD_KEYS
from ..names import METHODS as REGISTRY
from ..names import Entry, register
from .method import Method

__all__ = ["REGISTRY", "Entry", "register", "build", "with_sampler_correction"]

# Facts of the run a preset may take (Dr. GRPO's L_max is the longest completion sampled): passed
# where the preset has the parameter, never an error where it has not.
RUN_FACTS = {"max_new_tokens": "max_completion_length"}


def build(name: str, *, max_new_tokens: Optional[int] = None, **settings: Any) -> Method:
    """The registered method ``name`` from a recipe's settings (None values: the preset's own
    default). A setting the method does not take is an error naming it, never silently dropped."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    entry, kwargs = REGISTRY[name], {}
    for key, value in settings.items():
        if value is None:
            continue
        parameter = entry.parameter(key)
        if parameter is None:
            takes = [k for k in METHOD_KEYS if k != "method" and entry.parameter(k)]
            raise ValueError(f"method {name!r} has no setting {key!r} (it takes {', '.join(takes) or 'none'})")
        kwargs[parameter] = value
    facts = {"max_new_tokens": max_new_tokens}
    for fact, parameter in RUN_FACTS.items():
        if facts[fact] is not None and parameter in inspect.signature(entry.preset).parameters:
            kwargs[parameter] = facts[fact]
    method = entry.preset(**kwargs)
    if method.name != name:
        raise ValueError(f"method {name!r}: its preset {entry.preset.__name__} built a method named {method.name!r}")
    return method


def with_sampler_correction(method: Method, mode: str, c_max: float, sampler_exact: bool, stale: bool = False) -> Method:
    """``method`` with the sampler-mismatch correction ``mode`` asks for: ``auto`` weighs the samples
    of a sampler whose log-probs are another engine's (``Sampler.exact`` False: vLLM) with
    token_truncate (verl's TIS) when the method samples online, samples an older policy drew
    (``stale``: asynchronous rollouts) with token_mask (AReaL's decoupled PPO, cap ``c_max``), and
    does nothing otherwise. Terms already corrected are left as they are."""
    from ..coefficients import sampler_correction

    if mode == "auto":
        if not method.samples_online() or (sampler_exact and not stale):
            return method
        mode = "token_mask" if stale else "token_truncate"
    if mode == "none":
        return method
    return method.with_sampler_correction(sampler_correction(mode, c_max=c_max))
