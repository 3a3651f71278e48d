"""Asynchronous rollouts: a worker process samples while the learner trains, at most K policy
versions behind (docs/async.md). The staleness corrections are coefficient pieces
(:mod:`unified_rl.coefficients.staleness`)."""

from .producer import AsyncProducer, RolloutWorkerError, behaviour_stats
from .weights import SharedWeights
from .worker import Failed, Produced, WorkerSpec

__all__ = ["AsyncProducer", "RolloutWorkerError", "behaviour_stats", "SharedWeights", "Failed", "Produced", "WorkerSpec"]
