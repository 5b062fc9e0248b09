"""Printing events and log lines to stdout, where the host reads them line by line."""

import sys
from typing import Any, Callable, Iterable, Iterator, TypeVar

from container_payload.job import format_event

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
