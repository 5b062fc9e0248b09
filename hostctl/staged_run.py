"""One payload run into a staged output directory, the frame that quantize and compile share:

    with staged_run(output_dir, {"options": ..., "inputs": ...}, reporter) as run:
        rt = ...runtime for run.run_dir, run.trap...
        code, output = run_job(rt, run.run_dir, reporter)   # streams the payload into run.log and the display
        run.timings["payload"] = ...
        run.succeed(payload=...)                             # run.json last, then the staged files move in

run.json is written whatever happens: `running`, then `succeeded`, `failed` or `interrupted` with the error and
the timings so far. An OSError becomes one line (errors.io_error); on a full disk the partial outputs are
dropped first, so that the run.json saying why still fits. Signals are trapped for the whole run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from container_payload.job import JOB, parse_event
from hostctl import __version__
from hostctl.errors import HostctlError, Interrupted, io_error
from hostctl.signals import SignalTrap, trap_signals
from hostctl.staging import MANIFEST, RUN_LOG, Staging, written_files
from hostctl.ui import Reporter

TAIL_LINES = 15
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class StagedRun:
    stage: Staging
    trap: SignalTrap
    manifest: dict[str, Any]
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.stage.run_dir

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    def succeed(self, **fields: Any) -> None:
        """Record success in run.json (last), then move the staged files into the output directory."""
        run_dir = self.run_dir
        self.manifest.update(status="succeeded", files=sorted({p.name for p in run_dir.iterdir()} | {MANIFEST}),
                             written=sorted(set(written_files(run_dir)) | {MANIFEST}), timings=self.timings,
                             **fields)
        finish_manifest(run_dir, self.manifest, self.started)
        self.stage.commit()


@contextlib.contextmanager
def staged_run(output_dir: Path, fields: dict[str, Any], reporter: Reporter) -> Iterator[StagedRun]:
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    started = time.time()
    manifest: dict[str, Any] = {
        "run_id": run_id, "status": "running", "hostctl_version": __version__, **fields,
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "python": platform.python_version(), "uid": os.getuid(), "gid": os.getgid()},
        "started": _iso(started),
    }
    stage: Staging | None = None
    try:
        with trap_signals() as trap, Staging(output_dir, run_id) as stage:
            for path in stage.swept:
                reporter.debug(f"removed {path}, left by a run that is gone")
            run = StagedRun(stage, trap, manifest, started)
            try:
                yield run
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed"
                original = exc
                if isinstance(exc, OSError):
                    exc = io_error(exc)
                if getattr(exc, "disk_full", False):
                    stage.disk_full = True
                    stage.shrink()  # drop the partial outputs first, so the manifest that says why can be written
                manifest.update(status=status, error=str(exc) or type(exc).__name__, timings=run.timings)
                if run.run_dir.exists():
                    with contextlib.suppress(OSError):
                        finish_manifest(run.run_dir, manifest, started)
                if exc is not original:
                    raise exc from original
                raise
            finally:
                reporter.close()
    except HostctlError as exc:  # the staging directory has its failed-run name only once Staging has exited
        if stage is not None and stage.failed_dir is not None:
            name_failed_dir(exc, stage.failed_dir)
        raise


def name_failed_dir(exc: HostctlError, failed_dir: Path) -> None:
    """Say where the failed run's files are, instead of "the failed-run directory", and how old ones go."""
    where = f"{failed_dir}/"
    vague = "the failed-run directory"
    if exc.hint and vague in exc.hint:
        exc.hint = exc.hint.replace(vague, where)
    elif vague in exc.message:
        exc.message = exc.message.replace(vague, where)
        exc.args = (exc.message,)
    else:
        kept = f"The run's files are in {where}"
        if not exc.hint:
            exc.hint = kept
        elif "\n" in exc.hint:  # the log's last lines: the directory goes on a line of its own
            exc.hint = f"{exc.hint}\n{kept}"
        else:
            exc.hint = f"{exc.hint.rstrip('.')}. {kept}"
    exc.hint = (exc.hint or "").rstrip(".") + " (`hostctl clean` removes all but the newest failed-run directory)."


class PayloadOutput:
    """Routes each payload line: events to the progress display, the rest to the log and run.log."""

    def __init__(self, reporter: Reporter, log: TextIO) -> None:
        self.reporter = reporter
        self.log = log
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.error: dict[str, Any] | None = None

    def on_line(self, stream: str, line: str) -> None:
        event = parse_event(line)
        if event is None:
            line = ANSI.sub("", line)
            self.log.write(line + "\n" if stream == "stdout" else f"[stderr] {line}\n")
            self.log.flush()
            self.tail.append(line)
            self.reporter.log(line, stream)
            return
        kind = event["event"]
        if kind in ("warning", "error"):
            self.log.write(f"[{kind}] {event.get('message', '')}\n")
        if kind == "error":
            self.error = event
        else:
            self.reporter.event(event)


def run_job(rt: Any, run_dir: Path, reporter: Reporter) -> tuple[int, PayloadOutput]:
    """Run the job.json in run_dir through the runtime, streaming its output; (exit code, what it said)."""
    with open(run_dir / RUN_LOG, "w", encoding="utf-8") as log:
        output = PayloadOutput(reporter, log)
        try:
            code = rt.run(run_dir / JOB, output.on_line)
        finally:
            reporter.close()
    return code, output


def tail_hint(tail: list[str]) -> str:
    return "Last lines of the payload's log:\n  " + "\n  ".join(tail) if tail else "The payload printed nothing."


def finish_manifest(run_dir: Path, manifest: dict[str, Any], started: float) -> None:
    finished = time.time()
    manifest.update(finished=_iso(finished), duration_s=round(finished - started, 3))
    tmp = run_dir / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True, default=str),
                       encoding="utf-8")
        tmp.replace(run_dir / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))
