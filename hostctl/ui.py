"""The terminal: the only module that imports rich.

Human output goes to stderr so that stdout stays free for `--json` summaries and `--print-docker-cmd`.
Core code talks to a Reporter; tests pass a Reporter writing to a buffer, or use `Reporter(quiet=True)`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

PHASE_TITLES = {
    "load": "Loading model",
    "float": "Float predictions",
    "calibrate": "Calibrating",
    "test": "Quantized predictions",
    "finetune": "Fast finetuning",
    "check": "Checking with nndct",
    "analyze": "Analysing layers",
    "vai_finetune": "Fast finetuning (vai)",
    "vai_calibrate": "Calibrating (vai)",
    "vai_test": "Quantized predictions (vai)",
    "export": "Exporting",
    "compile": "Compiling (vai_c_xir)",
    "requirements": "Installing requirements",
    "pull": "Pulling image",
}


class _Rate(TextColumn):
    """Samples per second for a task, blank until there is a rate."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: ANN001 - rich's Task type
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return self.text_format if speed is None else f"{speed:,.1f} {unit}/s"


class Reporter:
    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False, debug: bool = False) -> None:
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.debug_enabled = debug
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self.warnings: list[str] = []

    # -- plain messages ------------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(escape(message))

    def success(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[green]✓[/] {escape(message)}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.console.print(f"[yellow]warning:[/] {escape(message)}")

    def error(self, message: str, hint: str | None = None) -> None:
        self.console.print(f"[bold red]error:[/] {escape(message)}")
        if hint:
            self.console.print(f"[dim]hint:[/] {escape(hint)}")

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.console.print(f"[dim]debug: {escape(message)}[/]")

    def log(self, line: str, stream: str = "stdout") -> None:
        """A line the payload printed, shown dimmed."""
        if not self.quiet:
            style = "dim red" if stream == "stderr" else "dim"
            self.console.print(f"[{style}]│ {escape(line)}[/]")

    # -- progress ------------------------------------------------------------------------------------------------
    def _bars(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _Rate(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                disable=self.quiet,
            )
            self._progress.start()
        return self._progress

    def start_task(self, key: str, total: float | None, description: str | None = None,
                   unit: str = "samples") -> None:
        bars = self._bars()
        if key in self._tasks:
            bars.update(self._tasks[key], total=total, completed=0)
            return
        self._tasks[key] = bars.add_task(description or PHASE_TITLES.get(key, key), total=total, unit=unit)

    def update_task(self, key: str, *, done: float | None = None, advance: float | None = None,
                    total: float | None = None) -> None:
        if key not in self._tasks:
            self.start_task(key, total)
        self._bars().update(self._tasks[key], completed=done, advance=advance, total=total)

    def describe_task(self, key: str, description: str) -> None:
        if key in self._tasks:
            self._bars().update(self._tasks[key], description=description)

    def finish_task(self, key: str, complete: bool = True) -> None:
        """The task ended: its bar shows it complete, or, if it was cut short, where it stopped."""
        if key in self._tasks:
            task = self._tasks[key]
            total = self._bars().tasks[task].total
            if total is not None and complete:
                self._bars().update(task, completed=total)
            elif not complete:
                self._bars().stop_task(task)

    @contextlib.contextmanager
    def task(self, key: str, total: float | None, description: str | None = None,
             unit: str = "samples") -> Iterator[None]:
        self.start_task(key, total, description, unit)
        try:
            yield
        finally:
            self.finish_task(key)

    def event(self, event: dict[str, Any]) -> None:
        """Render one payload event (container_payload.job event schema)."""
        kind = event.get("event")
        name = str(event.get("name", ""))
        if kind == "phase":
            if event.get("state") == "start":
                self.start_task(name, event.get("total"), unit=str(event.get("unit", "samples")))
            else:
                self.finish_task(name)
        elif kind == "progress":
            self.update_task(name, done=event.get("done"), total=event.get("total"))
        elif kind == "warning":
            self.warn(str(event.get("message", "")))
        elif kind == "log":
            self.log(str(event.get("message", "")))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    # -- results -------------------------------------------------------------------------------------------------
    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              text: bool = False) -> None:
        """Figures are right-aligned after the first column; `text` tables are left-aligned throughout."""
        if self.quiet:
            return
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 or text else "right", overflow="fold")
        for row in rows:
            table.add_row(*(escape(str(cell)) for cell in row))
        self.console.print(table)


@dataclass(frozen=True)
class OptionHelp:
    """One option in a --help panel: `names` with its metavar, `help` as rendered by typer, `notes` such as
    "[default: ...]" and "[env var: ...]"."""

    names: str
    help: Any
    notes: tuple[str, ...] = ()


def print_options_panel(console: Console, title: str, options: Sequence[OptionHelp]) -> None:
    """Names on one line, help indented below at the full width, each note whole on its own line: a default or a
    variable name is copied from here, so it is never cut or broken (it overflows only a terminal too narrow
    for it)."""
    parts: list[Any] = []
    for option in options:
        parts.append(Text(option.names, style="bold cyan", overflow="fold"))
        body: list[Any] = [option.help] if option.help is not None else []
        body += [Text(note, style="dim", no_wrap=True, overflow="ignore") for note in option.notes]
        if body:
            parts.append(Padding(Group(*body), (0, 0, 0, 4)))
    console.print(Panel(Group(*parts), title=title, title_align="left", border_style="dim"))


def print_checklist(reporter: Reporter, title: str, items: Sequence[tuple[bool, str, str, str]]) -> None:
    """(ok, check, detail, fix) as a left-aligned checklist: the detail wraps between words beside the check's
    name, and each line of a fix (one command a line) goes below it, wrapped only between words, so that no path
    or image name is ever broken."""
    if reporter.quiet:
        return
    console = reporter.console
    console.print(Text(title, style="bold"))
    width = max((len(check) for _, check, _, _ in items), default=0) + 2
    for ok, check, detail, fix in items:
        row = Table.grid(padding=(0, 1))
        row.add_column(width=4, no_wrap=True)
        row.add_column(width=width, no_wrap=True)
        row.add_column(ratio=1, overflow="fold")
        row.add_row(Text("ok", style="green") if ok else Text("FAIL", style="bold red"), Text(check),
                    Text(detail))
        console.print(row)
        for i, line in enumerate(fix.splitlines()):  # under the check's name: a whole `docker pull <image>` fits
            fixes = Table.grid(padding=(0, 1))
            fixes.add_column(width=8, no_wrap=True, justify="right")
            fixes.add_column(ratio=1, overflow="fold")
            fixes.add_row(Text("fix:" if i == 0 else "or:", style="dim"), Text(line, style="bold"))
            console.print(fixes)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what runs in the block (a user's model, imported and run on the host to check it) to stderr, the human
    output, both print() and writes to file descriptor 1 (a C extension, a subprocess): stdout is kept for the
    --json summary."""
    saved = None
    try:
        sys.stdout.flush()
        if sys.stdout.fileno() == 1:
            saved = os.dup(1)
            os.dup2(2, 1)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # stdout replaced (tests) or closed
        pass
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
