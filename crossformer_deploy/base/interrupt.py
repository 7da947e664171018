"""SIGINT/SIGTERM as an exception, so an interrupted export, calibration or engine build unwinds.

Python's default SIGTERM kills the process where it stands: no ``finally`` runs, and the hidden
``.name.*.tmp`` of an atomic write stays behind. Inside ``signals_as_exceptions()`` (every command's
``run_main`` enters it) both signals raise ``Interrupted`` instead, so every ``finally`` and context
manager on the stack cleans up; the command then exits 128 + the signal number (130, 143).

``deferred()`` marks the few statements that must not be cut in half (create a temp file and record
it; rename it into place and forget it): a signal arriving there is raised when the section ends.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; a KeyboardInterrupt so that ``except Exception`` lets it pass."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_state = {"depth": 0, "pending": None, "stopping": False}


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["stopping"]:
        return  # a second Ctrl-C while cleaning up must not cut the cleanup short
    if _state["depth"]:
        _state["pending"] = signum
        return
    _state["stopping"] = True
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread while inside (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in HANDLED}
    _state.update(depth=0, pending=None, stopping=False)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal until the block is done, then raise it (Python handlers run in the main thread only,
    so a counter is enough)."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        pending = _state["pending"]
        if not _state["depth"] and pending is not None:
            _state.update(pending=None, stopping=True)
            raise Interrupted(pending)
