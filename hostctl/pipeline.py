"""hostctl quantize: validate -> job -> runtime -> verify -> evaluate -> manifest, into a staged directory."""

from __future__ import annotations

import errno
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py

from container_payload.job import FLOAT_PREDS, JOB, LAYERS, QUANT_INFO, QUANT_PREDS, RESULT, Result, SchemaError
from hostctl import runtime
from hostctl.errors import EXIT_ENV, EnvironmentProblem, RunFailed, UsageError
from hostctl.inspect import inspect_before_quantizing, quantize_target
from hostctl.options import QuantizeOptions, compiled_dir
from hostctl.staged_run import PayloadOutput, run_job, staged_run, tail_hint
from hostctl.staging import RUN_LOG, sweep_payload_dirs
from hostctl.ui import Reporter
from hostctl.validate import Inputs, validate_quantize


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
    inspect: dict[str, Any] | None = None  # --target/--board: the inspection before calibration
    layers: dict[str, Any] | None = None  # portable/hybrid: layers.json's summary (hostctl/layers.py)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def quantize(opts: QuantizeOptions, reporter: Reporter) -> RunSummary:
    inputs = validate_quantize(opts)
    inspection = None
    target = quantize_target(opts)
    if target is not None:
        inspection = inspect_before_quantizing(opts, target, reporter)
    elif opts.dpu_strict:
        raise UsageError("--dpu-strict needs the DPU to check against", "Add --board kv260 (or zcu102, zcu104, "
                         "vck190, vek280, v70) or --target NAME.")
    sweep_payload_dirs()
    fields = {"options": opts.to_dict(),
              # absolute: `hostctl evaluate --output-dir` reads them back from any working directory
              "inputs": {"samples": str(inputs.samples.resolve()), "state_dict": str(inputs.state_dict.resolve()),
                         "num_calibration": inputs.num_calibration, "num_test": inputs.num_test}}
    with staged_run(opts.output_dir, fields, reporter) as run:
        if inspection is not None:
            inspection.write(run.run_dir, reporter)
            run.manifest["inspect"] = inspection.record()
        rt = runtime.create(opts, run.run_dir, reporter, run.trap)
        rt.prepare()
        run.manifest["runtime"] = rt.describe()
        run.stage.payload_started = True
        result = _run_payload(opts, inputs, rt, run.run_dir, reporter, run.timings)
        run.manifest["payload"] = {"backend": result.backend, "versions": result.versions,
                                   "timings": result.timings, "warnings": result.warnings, "check": result.check}
        if result.finetune is not None:
            run.manifest["payload"]["finetune"] = result.finetune
        if result.compile is not None:
            run.manifest["compile"] = result.compile
        layers = _layers(opts, result, run.run_dir, reporter,
                         rt.view(opts.model_path) if opts.model_path is not None else None)
        if layers is not None:
            from hostctl.layers import summary

            run.manifest["layers"] = summary(layers)
        metrics = None
        if opts.evaluate:
            t0 = time.perf_counter()
            metrics = _evaluate(opts, inputs, run.run_dir, reporter,
                                {"options": run.manifest["options"], "backend": result.backend, "run_id": run.run_id,
                                 "inspect": run.manifest.get("inspect")})
            run.timings["evaluate"] = time.perf_counter() - t0
        if layers is not None:
            from hostctl.layers import render_worst

            render_worst(layers, reporter)
        run.succeed()
    return RunSummary(status="succeeded", output_dir=run.stage.output_dir, run_id=run.run_id,
                      backend=result.backend, files=run.manifest["files"], timings=run.timings, metrics=metrics,
                      warnings=list(result.warnings), check=result.check, compile=result.compile,
                      inspect=inspection.record() if inspection is not None else None,
                      layers=run.manifest.get("layers"))


def _run_payload(opts: QuantizeOptions, inputs: Inputs, rt: runtime.Runtime, run_dir: Path, reporter: Reporter,
                 timings: dict[str, float]) -> Result:
    job = opts.to_job(rt.view(inputs.state_dict), rt.view(inputs.samples), rt.view(run_dir),
                      rt.view(opts.model_path) if opts.model_path else None)
    (run_dir / JOB).write_text(job.to_json(), encoding="utf-8")
    t0 = time.perf_counter()
    code, output = run_job(rt, run_dir, reporter)
    timings["payload"] = time.perf_counter() - t0
    return verify_outputs(run_dir, inputs, code, output)


def _layers(opts: QuantizeOptions, result: Result, run_dir: Path, reporter: Reporter,
            model_inside: str | None) -> dict[str, Any] | None:
    """layers.json where the run's path writes it (portable, hybrid; not --analyze-samples 0), read back, with the
    user's source lines as this machine names them (model_inside: where the payload saw --model-path); once a
    line where the quantizer has no analysis (vai, or hybrid fallen back to it)."""
    from hostctl.layers import expected, read_layers, render_unavailable, sources_on_the_host

    if not expected(opts.analyze_samples, result.backend):
        if opts.analyze_samples != 0:
            render_unavailable(result.backend, reporter)
        return None
    if not (run_dir / LAYERS).is_file():
        raise RunFailed(f"the payload reported success but did not write {LAYERS}",
                        f"See {RUN_LOG} in the failed-run directory; --analyze-samples 0 skips the analysis.")
    doc = read_layers(run_dir / LAYERS)
    if model_inside is not None and opts.model_path is not None and sources_on_the_host(
            doc, model_inside, opts.model_path.resolve()):
        (run_dir / LAYERS).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return doc


def verify_outputs(run_dir: Path, inputs: Inputs, code: int, output: PayloadOutput) -> Result:
    """Trust files, not exit codes: nndct can exit 0 after an error."""
    from hostctl.compile import raise_compile_error, read_compile_report

    tail = list(output.tail)
    raise_compile_error(output.error)
    if output.error is not None and code == EXIT_ENV:
        raise EnvironmentProblem(f"the payload's environment: {output.error.get('message')}")
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
        raise RunFailed(f"the payload {why}", tail_hint(tail))
    try:
        result = Result.from_json(result_file.read_text(encoding="utf-8"))
    except SchemaError as exc:
        raise RunFailed(f"{result_file.name} cannot be read: {exc}") from exc
    missing = [name for name in [QUANT_INFO, QUANT_PREDS, FLOAT_PREDS, *result.files]
               if not (run_dir / name).is_file()]
    if missing:
        raise RunFailed(f"the payload reported success but did not write {', '.join(sorted(set(missing)))}",
                        tail_hint(tail))
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


def _evaluate(opts: QuantizeOptions, inputs: Inputs, run_dir: Path, reporter: Reporter,
              run: dict[str, Any]) -> dict[str, Any]:
    from hostctl.evaluate import render_metrics
    from hostctl.report import evaluate_run, run_facts

    about = run_facts(run["options"], run["backend"], run["run_id"], inputs.samples.resolve())
    if run.get("inspect"):  # --target/--board: the inspection's verdict, as the terminal gave it
        from hostctl.inspect import dpu_fact

        about["DPU"] = dpu_fact(run["inspect"])
    try:
        evaluation = evaluate_run(inputs.samples, run_dir, opts.num_classes, reporter, about=about)
    except UsageError as exc:  # after the run, a problem of its predictions: not bad usage found before any work
        raise RunFailed(f"the predictions cannot be evaluated: {exc.message.replace(str(run_dir) + '/', '')}",
                        "The run's files are kept in the failed-run directory; --no-evaluate skips this step."
                        ) from exc
    reporter.close()
    render_metrics(evaluation.metrics, reporter)
    return evaluation.metrics.to_dict()
