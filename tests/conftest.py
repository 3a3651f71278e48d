"""Every annotated function in unified_rl is shape-checked at run time in tests
(jaxtyping + typeguard 2.13.3, installed before the package is first imported)."""

from jaxtyping import install_import_hook

with install_import_hook("unified_rl", "typeguard.typechecked"):
    import unified_rl

    for _name in unified_rl.__all__:  # the package loads its floors lazily: load them all under the hook
        getattr(unified_rl, _name)
    import unified_rl.lm_head  # noqa: F401
    import unified_rl.batching  # noqa: F401

import os
import sys

import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
settings.register_profile("ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
