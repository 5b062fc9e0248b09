"""SIGINT, SIGTERM and SIGHUP end a run through one cleanup path.

The first signal raises Interrupted in the main thread, so every `finally` and context manager on the stack
runs its cleanup (stop the container, terminate the subprocess, keep earlier results). A second signal during
that cleanup does not raise again (that would cut the cleanup short); it calls the registered "hurry" callbacks,
which kill at once instead of waiting out a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from hostctl.errors import EXIT_SIGNAL_BASE, Interrupted

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
            _Received.first = _Received.first or signum
            if _Deferral.depth:
                _Deferral.pending = signum
                return
            raise Interrupted(signum)
        for callback in list(self._hurry):
            callback()


class _Received:
    """The first signal the command received (a run's trap or the command's own handler), if any."""

    first: int | None = None


class _Swallowed:
    """A Stop raised where Python only prints it (a weakref callback or __del__ running when the signal came,
    "Exception ignored in ..."): the signal is not lost, the next run's trap or the CLI's end raises it."""

    signum: int | None = None


def pending_stop() -> int | None:
    """The signal whose Stop never reached the CLI's handler, if any (and forget it)."""
    signum, _Swallowed.signum = _Swallowed.signum, None
    return signum


@contextlib.contextmanager
def trap_signals() -> Iterator[SignalTrap]:
    swallowed = pending_stop()
    if swallowed is not None:
        raise Interrupted(swallowed)
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


# -- outside a run ---------------------------------------------------------------------------------------------

class Stop(BaseException):
    """A signal that arrived outside a run (while validating, in `evaluate`, `prepare`, `clean`). A BaseException,
    like KeyboardInterrupt, so that no `except Exception` on the way (around a model's import or forward, in
    click) takes it for an ordinary failure; the CLI's handler turns it into Interrupted."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals(process_exit: bool = False) -> Iterator[None]:
    """For a whole command: the first SIGINT, SIGTERM or SIGHUP raises Stop, so that `finally` blocks run and the
    command ends with one line and its exit code; a second one exits at once. A run replaces this with its own
    trap (trap_signals) while it lasts.

    With `process_exit` (the console script, whose process ends with the command), a command that was
    interrupted ignores further signals past this block: its error line is out, and the interpreter's shutdown
    (torch's, the threads') takes a moment, in which Python's own handlers (KeyboardInterrupt, then the default
    action it restores late in finalization) would end the process by the signal instead of with the first
    signal's exit code. CI saw exactly that once: exit -2 instead of 130 for a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopped: list[int] = []
    _Received.first = None

    def handle(signum: int, _frame: object) -> None:
        if stopped:
            os._exit(EXIT_SIGNAL_BASE + stopped[0])
        stopped.append(signum)
        _Received.first = _Received.first or signum
        _Swallowed.signum = signum  # cleared by the CLI when the Stop reaches it
        raise Stop(signum)

    def unraisable(info: object) -> None:  # a Stop lost in a callback is kept in _Swallowed, not printed
        if not isinstance(getattr(info, "exc_value", None), Stop):
            default_hook(info)

    default_hook = sys.unraisablehook
    previous = {sig: signal.signal(sig, handle) for sig in HANDLED}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = default_hook
        ending = process_exit and _Received.first is not None
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if ending else handler)


def ignore_further() -> None:
    """The command was interrupted and its cleanup is done: what is left is its error line and JSON summary, which
    a further signal must not cut off (stop_on_signals gives the handlers back, or keeps this for the process's
    end)."""
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_IGN)


def exit_while_starting() -> Callable[[], None]:
    """Until the returned function is called: a SIGINT, SIGTERM or SIGHUP ends the process at once with one
    `error:` line (and the JSON summary when --json is among the arguments) and its exit code. For the imports
    at start-up (typer, rich, the verbs), which take a second and touch no file: without it Ctrl-C there prints
    a KeyboardInterrupt traceback and SIGTERM kills without a word."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, _frame: object) -> None:
        code = EXIT_SIGNAL_BASE + signum
        message = f"interrupted by {signal.Signals(signum).name} while hostctl was starting; nothing was done"
        with contextlib.suppress(OSError):  # os.write: no buffered stream to re-enter from a signal handler
            os.write(2, f"error: {message}\n".encode())
            if "--json" in sys.argv[1:]:
                summary = {"status": "interrupted", "error": message, "hint": None, "exit_code": code}
                os.write(1, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        os._exit(code)

    previous = {sig: signal.signal(sig, handle) for sig in HANDLED}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
