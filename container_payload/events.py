"""Printing events and log lines to stdout, where the host reads them line by line."""

import sys
import traceback
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, TypeVar

from container_payload.job import EXIT_BAD_JOB, EXIT_FAILED, format_event

T = TypeVar("T")


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(format_event(event, **fields) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    emit("warning", message=message)


def log(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class Phase:
    """A phase with a total: emits start, progress after each step, and end."""

    def __init__(self, name: str, total: int, unit: str = "samples") -> None:
        self.name = name
        self.total = total
        self.unit = unit
        self.done = 0

    def __enter__(self) -> "Phase":
        emit("phase", name=self.name, state="start", total=self.total, unit=self.unit)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        emit("progress", name=self.name, done=self.done, total=self.total)

    def track(self, batches: Iterable[T], size: Callable[[T], int]) -> Iterator[T]:
        """Pass batches through, counting size(batch) as progress once the consumer is done with it."""
        for batch in batches:
            yield batch
            self.advance(size(batch))

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            emit("phase", name=self.name, state="end", total=self.total, done=self.done)


def run_job_file(job_path: str, parse: Callable[[str], T], work: Callable[[T], Dict[str, Any]]) -> int:
    """The payload's frame, for every kind of job: read the job, do the work, then one `result` event with
    the fields work returns, or one `error` event; returns the exit code.

    An exception with a true `quiet` attribute is reported by its message alone, others with their traceback
    on stderr too; its `exit_code` attribute (default EXIT_FAILED) is the exit code. When an OSError with an
    errno is in the exception's chain, that root I/O error is what is reported (h5py raises a second error when
    it closes a file on a full disk), with its errno and file name for the host."""
    try:
        with open(job_path, encoding="utf-8") as f:
            job = parse(f.read())
    except (OSError, ValueError) as exc:
        emit("error", kind=type(exc).__name__, message="cannot read job {}: {}".format(job_path, exc))
        return EXIT_BAD_JOB
    try:
        fields = work(job)
    except Exception as exc:  # noqa: BLE001 - every failure is reported as one error event
        io = root_os_error(exc)
        if io is not None:
            emit("error", kind=type(io).__name__, message="{}{}".format(
                io.strerror or io, " writing {}".format(io.filename) if io.filename else ""),
                errno=io.errno, filename=io.filename)
            return EXIT_FAILED
        if not getattr(exc, "quiet", False):
            traceback.print_exc(file=sys.stderr)
        emit("error", kind=type(exc).__name__, message=str(exc) or type(exc).__name__)
        return int(getattr(exc, "exit_code", EXIT_FAILED))
    emit("result", **fields)
    return 0


def root_os_error(exc: BaseException) -> "Optional[OSError]":
    """The first OSError with an errno in exc's chain."""
    seen = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found
