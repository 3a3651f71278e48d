"""unified_rl: every fine-tuning method as one gradient, sum_t GC(q, o, t) * grad log pi(o_t | q, o_<t).

    import unified_rl as url
    method = url.methods.grpo(beta=0.04, epsilon=0.2)
    rollout = method.coefficient.prepare(rollout)
    stats = url.engine.backward(model, rollout, method.coefficient)
"""

from . import coefficients, config, data, engine, evaluate, logprobs, loop, methods, rewards, tasks
from .engine import Stats
from .methods import Method
from .protocols import DataSource, GradientCoefficient, RewardFunction
from .rollout import Rollout

__version__ = "0.1.0"
__all__ = ["Rollout", "Method", "Stats", "DataSource", "RewardFunction", "GradientCoefficient", "coefficients", "config", "data", "engine",
           "evaluate", "logprobs", "loop", "methods", "rewards", "tasks"]
