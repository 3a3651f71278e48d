"""Ctrl-C that keeps the work: the first SIGINT asks the loop to stop after the step it is in (the
Trainer then saves a checkpoint and the caller writes its outputs); a second one stops at once."""

import signal
import sys
import threading
from types import FrameType
from typing import Any, Optional


class StopAfterStep:
    """A context manager: while active, the first Ctrl-C sets ``requested`` and says what will happen;
    the second raises ``KeyboardInterrupt`` at once. Outside the main thread it does nothing."""

    def __init__(self, what: str = "this step") -> None:
        self.requested = False
        self.what = what
        self._previous: Any = None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nCtrl-C: finishing {self.what}, then saving a checkpoint and the outputs (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopAfterStep":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
