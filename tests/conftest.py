"""Every annotated function in unified_rl is shape-checked at run time in tests
(jaxtyping + typeguard 2.13.3, installed before the package is first imported)."""

import inspect
import os
import types
import weakref

# One compute thread per test process, and for the processes a test starts (they inherit the
# environment): the suite runs as two pytest-xdist workers on two cores, and OpenMP threads that
# share a core with another process wait at every barrier (unified_rl/threads.py). Tests of the
# thread count itself remove the variable for their own runs.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import typeguard
from jaxtyping import install_import_hook


def _first_item(check):
    """typeguard 2.13.3 checks every item of a list, sequence, set or dict on every call (a
    10,000-row dataset, each time it is passed on); typeguard 3+ checks the first item by default
    (``collection_check_strategy=FIRST_ITEM``). This does the same: the container's own type in
    full, its items by the first one."""
    def first(argname, value, expected_type, memo):
        if isinstance(value, (list, tuple)) and len(value) > 1:
            value = value[:1]
        elif isinstance(value, dict) and len(value) > 1:
            value = dict([next(iter(value.items()))])
        elif isinstance(value, (set, frozenset)) and len(value) > 1:
            value = type(value)([next(iter(value))])
        check(argname, value, expected_type, memo)
    return first


def _cached(signature):
    """inspect.signature for typeguard, kept per function: typeguard 2.13.3 recomputes a function's
    signature on every call it checks (with jaxtyping's shim below, about half a check's cost); a
    function's signature never changes."""
    seen = weakref.WeakKeyDictionary()

    def cached(f):
        try:
            return seen[f]
        except (KeyError, TypeError):
            pass
        sig = signature(f)
        try:
            seen[f] = sig
        except TypeError:  # not weakly referable: computed each time, as before
            pass
        return sig
    return cached


class _Inspect(types.ModuleType):
    """typeguard's view of ``inspect``: the same module, with the signature kept per function."""

    def __getattr__(self, name):
        return getattr(inspect, name)


typeguard.inspect = _Inspect("inspect")
typeguard.inspect.signature = _cached(inspect.signature)


def _check_type(argname, value, expected_type, memo=None, *, globals=None, locals=None):
    """jaxtyping's shim of typeguard.check_type (``X | Y`` unions go to check_union), without binding
    its own signature on every call."""
    if type(expected_type) is types.UnionType:
        return typeguard.check_union(argname, value, expected_type, memo)
    return _ORIGINAL_CHECK_TYPE(argname, value, expected_type, memo, globals=globals, locals=locals)


_ORIGINAL_CHECK_TYPE = getattr(typeguard.check_type, "__wrapped__", typeguard.check_type)
typeguard.check_type = _check_type

for _origin, _check in list(typeguard.origin_type_checkers.items()):
    if _check in (typeguard.check_list, typeguard.check_sequence, typeguard.check_set, typeguard.check_dict):
        typeguard.origin_type_checkers[_origin] = _first_item(_check)

# The hook's loader points every import made while a hooked module runs at its own bytecode cache
# names, so a dependency first imported from inside unified_rl is compiled from source (torch,
# transformers, sympy, scipy: about 2,500 modules, 8-10 s per test process). Imported first, they
# load from their caches; the hook still instruments every unified_rl module.
import einops  # noqa: E402,F401
import torch.distributed.checkpoint.state_dict  # noqa: E402,F401
import torch.distributed.fsdp  # noqa: E402,F401
import torch.distributed.tensor  # noqa: E402,F401
import transformers.modeling_utils  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401

with install_import_hook("unified_rl", "typeguard.typechecked"):
    import unified_rl

    for _name in unified_rl.__all__:  # the package loads its floors lazily: load them all under the hook
        getattr(unified_rl, _name)
    import unified_rl.lm_head  # noqa: F401
    import unified_rl.batching  # noqa: F401

import sys

import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
settings.register_profile("ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
