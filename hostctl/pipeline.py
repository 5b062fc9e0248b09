"""hostctl quantize: validate -> job -> runtime -> verify -> evaluate -> manifest, into a staged directory."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import platform
import re
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import h5py

from container_payload.job import (
    FLOAT_PREDS,
    JOB,
    QUANT_INFO,
    QUANT_PREDS,
    RESULT,
    Result,
    SchemaError,
    parse_event,
)
from hostctl import __version__, runtime
from hostctl.errors import Interrupted, RunFailed, io_error
from hostctl.options import QuantizeOptions, compiled_dir
from hostctl.signals import trap_signals
from hostctl.staging import MANIFEST, RUN_LOG, Staging, sweep_payload_dirs, written_files
from hostctl.ui import Reporter
from hostctl.validate import Inputs, validate_quantize

TAIL_LINES = 15
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class RunSummary:
    status: str
    output_dir: Path
    run_id: str
    backend: str
    files: list[str]
    timings: dict[str, float]
    metrics: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None  # --quantizer hybrid: nndct's test mode against the portable outputs
    compile: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


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


def quantize(opts: QuantizeOptions, reporter: Reporter) -> RunSummary:
    inputs = validate_quantize(opts)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    started = time.time()
    timings: dict[str, float] = {}
    sweep_payload_dirs()
    with trap_signals() as trap, Staging(opts.output_dir, run_id) as stage:
        run_dir = stage.run_dir
        for path in stage.swept:
            reporter.debug(f"removed {path}, left by a run that is gone")
        manifest: dict[str, Any] = {
            "run_id": run_id, "status": "running", "hostctl_version": __version__,
            "options": opts.to_dict(), "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                                                "python": platform.python_version(), "uid": os.getuid(),
                                                "gid": os.getgid()},
            "inputs": {"samples": str(inputs.samples), "state_dict": str(inputs.state_dict),
                       "num_calibration": inputs.num_calibration, "num_test": inputs.num_test},
            "started": _iso(started),
        }
        try:
            rt = runtime.create(opts, run_dir, reporter, trap)
            rt.prepare()
            manifest["runtime"] = rt.describe()
            stage.payload_started = True
            result = _run_payload(opts, inputs, rt, run_dir, reporter, timings)
            manifest["payload"] = {"backend": result.backend, "versions": result.versions,
                                   "timings": result.timings, "warnings": result.warnings, "check": result.check}
            if result.compile is not None:
                manifest["compile"] = result.compile
            metrics = None
            if opts.evaluate:
                t0 = time.perf_counter()
                metrics = _evaluate(opts, inputs, run_dir, reporter)
                timings["evaluate"] = time.perf_counter() - t0
            files = sorted(p.name for p in run_dir.iterdir()) + [MANIFEST]
            manifest.update(status="succeeded", files=sorted(set(files)), timings=timings,
                            written=sorted(set(written_files(run_dir)) | {MANIFEST}))
            _finish_manifest(run_dir, manifest, started)
            stage.commit()
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed"
            original = exc
            if isinstance(exc, OSError):
                exc = io_error(exc)
            if getattr(exc, "disk_full", False):
                stage.disk_full = True
                stage.shrink()  # drop the partial outputs first, so the manifest that says why can be written
            manifest.update(status=status, error=str(exc) or type(exc).__name__, timings=timings)
            if run_dir.exists():
                with contextlib.suppress(OSError):
                    _finish_manifest(run_dir, manifest, started)
            if exc is not original:
                raise exc from original
            raise
        finally:
            reporter.close()
    return RunSummary(status="succeeded", output_dir=stage.output_dir, run_id=run_id, backend=result.backend,
                      files=manifest["files"], timings=timings, metrics=metrics,
                      warnings=list(result.warnings), check=result.check, compile=result.compile)


def _run_payload(opts: QuantizeOptions, inputs: Inputs, rt: runtime.Runtime, run_dir: Path, reporter: Reporter,
                 timings: dict[str, float]) -> Result:
    job = opts.to_job(rt.view(inputs.state_dict), rt.view(inputs.samples), rt.view(run_dir),
                      rt.view(opts.model_path) if opts.model_path else None)
    job_file = run_dir / JOB
    job_file.write_text(job.to_json(), encoding="utf-8")
    t0 = time.perf_counter()
    with open(run_dir / RUN_LOG, "w", encoding="utf-8") as log:
        output = PayloadOutput(reporter, log)
        try:
            code = rt.run(job_file, output.on_line)
        finally:
            reporter.close()
    timings["payload"] = time.perf_counter() - t0
    return verify_outputs(run_dir, inputs, code, output)


def verify_outputs(run_dir: Path, inputs: Inputs, code: int, output: PayloadOutput) -> Result:
    """Trust files, not exit codes: nndct can exit 0 after an error."""
    from hostctl.compile import raise_compile_error, read_compile_report

    tail = list(output.tail)
    raise_compile_error(output.error)
    if output.error is not None:
        if output.error.get("errno") == errno.ENOSPC:
            failed = RunFailed(f"no space left on device writing {output.error.get('filename') or 'the results'} "
                               "in the payload; earlier results are intact", "Free some space and run again.")
            failed.disk_full = True
            raise failed
        raise RunFailed(f"the payload failed: {output.error.get('kind', 'error')}: {output.error.get('message')}",
                        f"See {RUN_LOG} in the failed-run directory.")
    result_file = run_dir / RESULT
    if code != 0 or not result_file.is_file():
        why = _exit_reason(code) if code != 0 else f"exited with status 0 but wrote no {RESULT}"
        raise RunFailed(f"the payload {why}", _tail_hint(tail))
    try:
        result = Result.from_json(result_file.read_text(encoding="utf-8"))
    except SchemaError as exc:
        raise RunFailed(f"{result_file.name} cannot be read: {exc}") from exc
    missing = [name for name in [QUANT_INFO, QUANT_PREDS, FLOAT_PREDS, *result.files]
               if not (run_dir / name).is_file()]
    if missing:
        raise RunFailed(f"the payload reported success but did not write {', '.join(sorted(set(missing)))}",
                        _tail_hint(tail))
    try:
        json.loads((run_dir / QUANT_INFO).read_text(encoding="utf-8"))["param"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFailed(f"{QUANT_INFO} is not a valid quantization config ({exc})") from exc
    for name in (QUANT_PREDS, FLOAT_PREDS):
        with h5py.File(run_dir / name, "r") as h5:
            if len(h5) != inputs.num_test:
                raise RunFailed(f"{name} holds {len(h5)} predictions, expected {inputs.num_test}")
    if result.compile is not None and "skipped" not in result.compile:
        read_compile_report(run_dir / compiled_dir(str(result.compile.get("board"))))
    return result


def _exit_reason(code: int) -> str:
    """A local process killed by signal N returns -N; a container's shell reports 128 + N."""
    signum = -code if code < 0 else code - 128 if 128 < code < 160 else 0
    try:
        name = signal.Signals(signum).name if signum else ""
    except ValueError:
        name = ""
    if not name:
        return f"exited with status {code}"
    why = f"was killed by {name}"
    if signum == signal.SIGKILL:
        why += " (often the kernel's out-of-memory killer: lower --calib-batch-size or free memory)"
    return why


def _tail_hint(tail: list[str]) -> str:
    return "Last lines of the payload's log:\n  " + "\n  ".join(tail) if tail else "The payload printed nothing."


def _evaluate(opts: QuantizeOptions, inputs: Inputs, run_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from hostctl.evaluate import render_metrics
    from hostctl.report import evaluate_run

    evaluation = evaluate_run(inputs.samples, run_dir, opts.num_classes, reporter)
    reporter.close()
    render_metrics(evaluation.metrics, reporter)
    return evaluation.metrics.to_dict()


def _finish_manifest(run_dir: Path, manifest: dict[str, Any], started: float) -> None:
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
