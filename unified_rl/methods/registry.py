"""The one registry of method names: CLI ``--method``, config ``method``, docs and ``Method.name``."""

from dataclasses import dataclass
from typing import Any, Callable

from .method import Method


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
    return with_config_correction(method, cfg)


def with_config_correction(method: Method, cfg: Any) -> Method:
    """``method`` with the sampler-mismatch correction that ``cfg.sampler_correction`` asks for:
    ``auto`` weighs an inexact sampler's (vLLM's) samples with token_truncate (verl's TIS) when the
    method samples online, and does nothing otherwise."""
    from ..coefficients import sampler_correction
    from ..names import INEXACT_SAMPLERS

    mode = getattr(cfg, "sampler_correction", "auto")
    if mode == "auto":
        if getattr(cfg, "sampler", "static") not in INEXACT_SAMPLERS or not method.samples_online():
            return method
        mode = "token_truncate"
    if mode == "none":
        return method
    return method.with_sampler_correction(sampler_correction(mode, c_max=getattr(cfg, "sampler_correction_max", 2.0)))


def given(cfg: Any, **fields: str) -> dict[str, Any]:
    """Preset keyword arguments from the config fields that were set: ``given(cfg, beta="beta")``
    -> ``{"beta": cfg.beta}`` unless ``cfg.beta`` is None (then the preset's own default holds)."""
    return {arg: getattr(cfg, f) for arg, f in fields.items() if getattr(cfg, f) is not None}
