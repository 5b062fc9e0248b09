"""SIGINT, SIGTERM and SIGHUP end a run through one cleanup path.

The first signal raises Interrupted in the main thread, so every `finally` and context manager on the stack
runs its cleanup (stop the container, terminate the subprocess, keep earlier results). A second signal during
that cleanup does not raise again (that would cut the cleanup short); it calls the registered "hurry" callbacks,
which kill at once instead of waiting out a grace period.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from hostctl.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalTrap:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._hurry: list[Callable[[], None]] = []

    def on_hurry(self, callback: Callable[[], None]) -> None:
        self._hurry.append(callback)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            if _Deferral.depth:
                _Deferral.pending = signum
                return
            raise Interrupted(signum)
        for callback in list(self._hurry):
            callback()


@contextlib.contextmanager
def trap_signals() -> Iterator[SignalTrap]:
    trap = SignalTrap()
    if threading.current_thread() is not threading.main_thread():
        yield trap
        return
    previous = {sig: signal.signal(sig, trap._handle) for sig in HANDLED}
    try:
        yield trap
    finally:
        # After an interruption the process is on its way out: a further signal must not cut that short.
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if trap.signum is not None else handler)



class _Deferral:
    """Set while a step that must not stop half-way runs; the trap's handler then only records the signal."""

    depth = 0
    pending: int | None = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back the Interrupted of a trapped SIGINT, SIGTERM or SIGHUP during the block (the move of a run's
    results into place): a signal sent meanwhile raises it when the block ends, done or undone. (Blocking the
    signals instead would not do: the kernel hands a process's signal to any thread that does not block it.)"""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if not _Deferral.depth and _Deferral.pending is not None:
            signum, _Deferral.pending = _Deferral.pending, None
            raise Interrupted(signum)
