"""``--env module:Factory``: the environment factory a command line names, found the way uvicorn finds
an app (the current folder is importable), every mistake a one-line error naming the flag."""

import importlib
import os
import sys
from typing import Any


def load_factory(spec: str) -> Any:
    """The callable ``spec`` names (``package.module:Name``): a class or function that makes one
    episode's :class:`~unified_rl.environments.Environment`."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--env {spec!r}: expected module:Factory (e.g. my_envs:Calculator)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ValueError(f"--env {spec!r}: no module {e.name!r} (is it in the current folder or installed?)") from None
    factory = getattr(found, name, None)
    if factory is None:
        raise ValueError(f"--env {spec!r}: module {module!r} has no {name!r}")
    if not callable(factory):
        raise ValueError(f"--env {spec!r}: {name!r} is a {type(factory).__name__}, not a factory (a class or function)")
    return factory
