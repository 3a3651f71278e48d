"""Whether the commands draw progress bars: set once where a command starts (``--no-progress``,
``run_demo(progress=)``, ``run_experiment(progress=)``), read where a bar is drawn, so the choice is
not handed down through every function in between."""

import contextlib
import contextvars
from typing import Iterator

_SHOWN = contextvars.ContextVar("unified_rl_progress_bars", default=True)


def bars() -> bool:
    """True when progress bars are drawn (the default)."""
    return _SHOWN.get()


@contextlib.contextmanager
def progress_bars(shown: bool) -> Iterator[None]:
    """A block in which progress bars are drawn, or not."""
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)
