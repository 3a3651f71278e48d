"""unified_rl: every fine-tuning method as one gradient, sum_t GC(q, o, t) * grad log pi(o_t | q, o_<t).

    import unified_rl as url
    method = url.methods.grpo(beta=0.04, epsilon=0.2)
    rollout = method.coefficient.prepare(rollout)
    stats = url.engine.backward(model, rollout, method.coefficient)

Three floors (docs/architecture.md): the core (``rollout``, ``protocols``, ``coefficients``,
``engine``; torch, numpy, jaxtyping and einops only), ``hf`` (the one seam to transformers) and
the library built on the protocols (``data``, ``rewards``, ``methods``; the ``loop`` trains
transformers models through ``hf``). The core and ``data``, ``rewards`` and ``methods`` import
without transformers installed; the engine never imports ``hf``: importing ``hf`` registers its
model adapters (chunked head, shared prompts) and PPO's default value model. ``unified_rl.apps`` (CLI,
demo, experiments, the arithmetic task) is built on the library and never imported by it.

``import unified_rl`` itself loads nothing heavy (``unified-rl --help`` answers without torch); each
name below is imported on first use.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_CORE = {"Rollout": "rollout", "Stats": "engine", "ExecutionPlan": "engine", "DataSource": "protocols", "RewardFunction": "protocols",
         "GradientCoefficient": "protocols", "Sampler": "protocols", "ModelAdapter": "protocols", "CriticSpec": "critic"}
_CORE_MODULES = ("coefficients", "critic", "distributed", "engine", "protocols", "threads")
_LIBRARY_MODULES = ("config", "data", "environments", "evaluate", "methods", "rewards")
_TRANSFORMERS_MODULES = ("hf", "loop")


__all__ = [*_CORE, *_CORE_MODULES, "Method", *_LIBRARY_MODULES, *_TRANSFORMERS_MODULES]


def __getattr__(name: str) -> Any:
    """Import a floor (or the module holding a public name) on first use."""
    if name in _CORE_MODULES or name in _LIBRARY_MODULES or name in _TRANSFORMERS_MODULES:  # hf, loop: ImportError without transformers
        value = importlib.import_module(f".{name}", __name__)
    elif name in _CORE:
        value = getattr(importlib.import_module(f".{_CORE[name]}", __name__), name)
    elif name == "Method":
        value = importlib.import_module(".methods", __name__).Method
    else:
        raise AttributeError(f"module 'unified_rl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
