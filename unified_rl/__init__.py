"""unified_rl: every fine-tuning method as one gradient, sum_t GC(q, o, t) * grad log pi(o_t | q, o_<t).

    import unified_rl as url
    method = url.methods.grpo(beta=0.04, epsilon=0.2)
    rollout = method.coefficient.prepare(rollout)
    stats = url.engine.backward(model, rollout, method.coefficient)

Three floors (docs/architecture.md): the core (``rollout``, ``protocols``, ``coefficients``,
``engine``; no transformers), ``hf`` (the one seam to transformers) and the library built on the
protocols (``data``, ``rewards``, ``methods``, ``loop``). ``unified_rl.apps`` (CLI, demo,
experiments, the arithmetic task) is built on the library and never imported by it.
"""

from . import coefficients, engine, hf, protocols  # hf first after the core: it registers the transformers adapter
from . import config, data, evaluate, loop, methods, rewards
from .engine import ExecutionPlan, Stats
from .methods import Method
from .protocols import DataSource, GradientCoefficient, ModelAdapter, RewardFunction, Sampler
from .rollout import Rollout

__version__ = "0.1.0"
__all__ = ["Rollout", "Method", "Stats", "ExecutionPlan", "DataSource", "RewardFunction", "GradientCoefficient", "Sampler", "ModelAdapter",
           "coefficients", "config", "data", "engine", "evaluate", "hf", "loop", "methods", "protocols", "rewards"]
