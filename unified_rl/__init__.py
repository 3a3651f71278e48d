"""unified_rl: every fine-tuning method as one gradient, sum_t GC(q, o, t) * grad log pi(o_t | q, o_<t).

    import unified_rl as url
    method = url.methods.grpo(beta=0.04, epsilon=0.2)
    rollout = method.coefficient.prepare(rollout)
    stats = url.engine.backward(model, rollout, method.coefficient)

Three floors (docs/architecture.md): the core (``rollout``, ``protocols``, ``coefficients``,
``engine``; torch, numpy, jaxtyping and einops only), ``hf`` (the one seam to transformers) and
the library built on the protocols (``data``, ``rewards``, ``methods``, ``loop``). The core
imports without transformers installed; then only the core is loaded. ``unified_rl.apps`` (CLI,
demo, experiments, the arithmetic task) is built on the library and never imported by it.
"""

import importlib.util

from . import coefficients, engine, protocols, threads
from .engine import ExecutionPlan, Stats
from .protocols import DataSource, GradientCoefficient, ModelAdapter, RewardFunction, Sampler
from .rollout import Rollout

threads.fit_threads()  # no more torch threads than the cores this process may use (affinity, cgroup quota)

__version__ = "0.1.0"
__all__ = ["Rollout", "Stats", "ExecutionPlan", "DataSource", "RewardFunction", "GradientCoefficient", "Sampler", "ModelAdapter",
           "coefficients", "engine", "protocols"]

try:
    _has_transformers = importlib.util.find_spec("transformers") is not None
except (ImportError, ValueError):
    _has_transformers = False
if _has_transformers:  # importing hf registers the transformers ModelAdapter with the engine
    from . import config, data, evaluate, hf, loop, methods, rewards
    from .methods import Method

    __all__ += ["Method", "config", "data", "evaluate", "hf", "loop", "methods", "rewards"]
