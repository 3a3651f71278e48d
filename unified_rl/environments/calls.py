"""Calling an environment without trusting it: every call has a time limit, and what it raises
or returns wrong is reported, never propagated (the episode is then left unscored)."""

import threading
from dataclasses import dataclass
from typing import Any, Callable


class Failure(Exception):
    """Why a call to an environment failed (``kind``: ``"error"`` or ``"timeout"``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class _Slot:
    value: Any = None
    error: BaseException | None = None
    done: bool = False


def guarded(fn: Callable, *args: Any, timeout_s: "float | None", what: str) -> Any:
    """``fn(*args)`` on a daemon thread, waited for at most ``timeout_s``: its value, or a
    :class:`Failure` naming ``what`` when it raises or does not return in time (a hung call is
    abandoned on its thread, which cannot keep the process from exiting). ``timeout_s=None``: called
    on this thread, without a limit."""
    if timeout_s is None:  # called here, on this thread (an environment that needs the main thread: signals)
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            raise Failure("error", f"{what} raised {type(e).__name__}: {e}") from None
    slot = _Slot()

    def run() -> None:
        try:
            slot.value = fn(*args)
        except BaseException as e:  # noqa: BLE001 -- anything the environment raises is reported, not propagated
            slot.error = e
        slot.done = True

    thread = threading.Thread(target=run, name=f"environment {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not slot.done:
        raise Failure("timeout", f"{what} did not return within {timeout_s:g} s")
    if slot.error is not None:
        raise Failure("error", f"{what} raised {type(slot.error).__name__}: {slot.error}")
    return slot.value
