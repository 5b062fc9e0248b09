"""hostctl compile: a quantized xmodel through vai_c_xir in the Vitis AI image, into a staged directory.

    resolve xmodel and arch (--board, --arch FILE or --fingerprint) -> job.json -> the payload's compile step
    in one container (same lifecycle, uid/gid mapping, labels, signals as quantize) -> verify -> compile.json,
    run.json -> commit

The payload runs the compiler and reads its log (container_payload/compiler.py); this module checks what it
wrote and says what fell off the DPU.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from container_payload.job import ARCH_ROOT, BOARDS, COMPILE_REPORT, JOB, CompileJob, CompileStep
from hostctl.errors import EnvironmentProblem, InputError, RunFailed, UsageError
from hostctl.options import DEFAULT_CONDA_ENV, DEFAULT_IMAGE, DEFAULT_OUTPUT_DIR
from hostctl.staged_run import PayloadOutput, run_job, staged_run, tail_hint
from hostctl.staging import RUN_LOG
from hostctl.ui import Reporter
from hostctl.validate import check_output_dir

DEFAULT_BOARD = "kv260"
DEFAULT_ARTIFACTS = DEFAULT_OUTPUT_DIR.parent
IN_ARCH = "/hostctl/arch/arch.json"
ARCH_FILE = "arch.json"
COMPILER_HINT = (f"Use a Vitis AI image that ships the compiler (e.g. {DEFAULT_IMAGE}) with --image, or name the "
                 "conda env that has vai_c_xir with --conda-env.")
ARCH_HINT = ("Pass your board's arch.json to `hostctl compile --arch FILE`, or its DPU fingerprint with "
             "--fingerprint 0x...")
OUTPUT_NAMES = ("{net}.xmodel", "meta.json", "md5sum.txt", COMPILE_REPORT)


@dataclass(frozen=True)
class CompileOptions:
    input_dir: Path = DEFAULT_OUTPUT_DIR  # the quantize step's output directory
    xmodel: Path | None = None  # default: the one *_int.xmodel in input_dir
    output_dir: Path | None = None  # default: deployment_artifacts/compiled_<board>
    board: str | None = None  # default kv260 unless --arch or --fingerprint
    arch: Path | None = None
    fingerprint: str | None = None
    net_name: str | None = None
    image: str = DEFAULT_IMAGE
    conda_env: str = DEFAULT_CONDA_ENV
    pull: str = "missing"
    keep_container: bool = False
    # What DockerRuntime also reads; a compile has no model code, requirements or memory limit of its own.
    model_path: Path | None = None
    requirements: Path | None = None
    memory: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in ("model_path", "requirements", "memory")}


@dataclass(frozen=True)
class Arch:
    """Where the compiler reads the arch.json: a board's in the image, the user's file, or one hostctl writes."""

    label: str  # kv260, "arch <file>", "fingerprint 0x..."
    inside: str
    host_file: Path | None = None  # a user's file, mounted read-only
    fingerprint: str | None = None  # written into the run directory as arch.json
    board: str | None = None


@dataclass(frozen=True)
class CompileSummary:
    status: str
    output_dir: Path
    run_id: str
    report: dict[str, Any]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def board_arch(board: str) -> str:
    """The arch.json of a --board inside the Vitis AI image."""
    if board not in BOARDS:
        raise UsageError(f"--board {board!r} is not one of: {', '.join(BOARDS)}",
                         f"Pass one of {', '.join(BOARDS)}, or --arch FILE / --fingerprint 0x... for another DPU.")
    return f"{ARCH_ROOT}/{BOARDS[board]}/{ARCH_FILE}"


def resolve_arch(opts: CompileOptions) -> Arch:
    given = [flag for flag, value in (("--board", opts.board), ("--arch", opts.arch),
                                      ("--fingerprint", opts.fingerprint)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} both name the DPU", "Pass only one of --board, --arch, --fingerprint.")
    if opts.arch is not None:
        check_arch_file(opts.arch)
        return Arch(f"arch {opts.arch}", IN_ARCH, host_file=opts.arch.resolve())
    if opts.fingerprint is not None:
        if not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", opts.fingerprint):
            raise UsageError(f"--fingerprint {opts.fingerprint!r} is not a hexadecimal DPU fingerprint",
                             "Write it like 0x101000016010407 (the board's DPU reports it; `xdputil query`).")
        return Arch(f"fingerprint {opts.fingerprint}", "", fingerprint=opts.fingerprint)
    board = opts.board or DEFAULT_BOARD
    return Arch(board, board_arch(board), board=board)


def check_arch_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "arch file not found", ARCH_HINT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"is not a JSON arch file ({exc})", ARCH_HINT) from exc
    if not isinstance(data, dict) or not (isinstance(data.get("target"), str)
                                          or isinstance(data.get("fingerprint"), str)):
        raise InputError(path, 'names no DPU: an arch.json holds {"target": "DPU..."} or {"fingerprint": "0x..."}',
                         ARCH_HINT)


def resolve_xmodel(opts: CompileOptions) -> Path:
    if opts.xmodel is not None:
        if not opts.xmodel.is_file():
            raise InputError(opts.xmodel, "xmodel not found", "Pass the quantized model that quantize exported.")
        return opts.xmodel.resolve()
    found = sorted(opts.input_dir.glob("*_int.xmodel")) if opts.input_dir.is_dir() else []
    if len(found) != 1:
        problem = "holds no quantized *_int.xmodel" if not found else \
            f"holds {len(found)} quantized xmodels ({', '.join(p.name for p in found)})"
        raise InputError(opts.input_dir, problem, "Run `hostctl quantize` with the vai quantizer first (it exports "
                                                  "the xmodel), or pass --xmodel FILE.")
    return found[0].resolve()


def default_output_dir(arch: Arch) -> Path:
    name = arch.board or ("fingerprint_" + arch.fingerprint if arch.fingerprint else "custom")
    return DEFAULT_ARTIFACTS / f"compiled_{name}"


def compile_model(opts: CompileOptions, reporter: Reporter) -> CompileSummary:
    from hostctl.runtime.docker import DockerRuntime  # imports the docker SDK only when it is needed

    xmodel = resolve_xmodel(opts)
    arch = resolve_arch(opts)
    output_dir = opts.output_dir or default_output_dir(arch)
    check_output_dir(output_dir, [xmodel] + ([arch.host_file] if arch.host_file else []))
    settings = dataclasses.replace(opts, input_dir=xmodel.parent)
    read_only = [(arch.host_file, IN_ARCH)] if arch.host_file else []
    fields = {"verb": "compile", "options": opts.to_dict(), "inputs": {"xmodel": str(xmodel), "arch": arch.label}}
    with staged_run(output_dir, fields, reporter) as run:
        run_dir = run.run_dir
        # CompileOptions carries every field DockerRuntime reads from QuantizeOptions.
        rt = DockerRuntime(settings, run_dir, reporter, run.trap, read_only=read_only)  # type: ignore[arg-type]
        rt.prepare()
        run.manifest["runtime"] = rt.describe()
        run.stage.payload_started = True
        inside_arch = arch.inside
        if arch.fingerprint:
            (run_dir / ARCH_FILE).write_text(json.dumps({"fingerprint": arch.fingerprint}) + "\n", encoding="utf-8")
            inside_arch = rt.view(run_dir / ARCH_FILE)
        step = CompileStep(arch=inside_arch, output_dir=rt.view(run_dir), net_name=opts.net_name, board=arch.board)
        job = CompileJob(xmodel=rt.view(xmodel), run_dir=rt.view(run_dir), compile=step)
        (run_dir / JOB).write_text(job.to_json(), encoding="utf-8")
        reporter.info(f"compiling {xmodel.name} for {arch.label} in {opts.image}")
        t0 = time.perf_counter()
        code, output = run_job(rt, run_dir, reporter)
        run.timings["compile"] = round(time.perf_counter() - t0, 3)
        report = verify_compile(run_dir, code, output)
        run.succeed(compile=report)
    return CompileSummary(status="succeeded", output_dir=run.stage.output_dir, run_id=run.run_id, report=report,
                          files=run.manifest["files"], warnings=list(report.get("warnings", [])))


def raise_compile_error(error: dict[str, Any] | None) -> None:
    """Turn the payload's compile error event into the right exit: 3 for a missing compiler or arch, else 1."""
    if error is None:
        return
    kind, message = error.get("kind"), str(error.get("message", ""))
    if kind == "ArchMissing":
        raise EnvironmentProblem(f"the image has {message}", ARCH_HINT)
    if kind == "CompilerMissing":
        raise EnvironmentProblem(f"the image has no compiler: {message}", COMPILER_HINT)
    if kind == "CompileFailed":
        raise RunFailed(f"the compile failed: {message}", f"See {RUN_LOG} in the failed-run directory; earlier "
                                                          "results are untouched.")


def verify_compile(directory: Path, code: int, output: PayloadOutput) -> dict[str, Any]:
    """Trust files: the compiler's three outputs and a compile.json with the fields the contract names."""
    raise_compile_error(output.error)
    if output.error is not None:
        raise RunFailed(f"the payload failed: {output.error.get('kind', 'error')}: {output.error.get('message')}",
                        f"See {RUN_LOG} in the failed-run directory.")
    if code != 0:
        raise RunFailed(f"the compile payload exited with status {code}", tail_hint(list(output.tail)))
    return read_compile_report(directory)


def read_compile_report(directory: Path) -> dict[str, Any]:
    path = directory / COMPILE_REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFailed(f"the compiler ran but {COMPILE_REPORT} cannot be read ({exc})") from exc
    problems = [key for key, kind in (("target", str), ("device_subgraphs", int), ("dpu_subgraphs", int),
                                      ("cpu_ops", list)) if not isinstance(report.get(key), kind)]
    if problems:
        raise RunFailed(f"{COMPILE_REPORT} lacks {', '.join(problems)}: the compiler's log did not say them",
                        f"See {RUN_LOG}.")
    net = str(report.get("net_name", ""))
    missing = [name.format(net=net) for name in OUTPUT_NAMES if not (directory / name.format(net=net)).is_file()]
    if missing:
        raise RunFailed(f"the compiler reported success but did not write {', '.join(missing)}", f"See {RUN_LOG}.")
    return report


def render_report(report: dict[str, Any], reporter: Reporter) -> None:
    """The subgraph table, then the one-line warning when more than one subgraph runs on the DPU."""
    rows: list[tuple[Any, ...]] = []
    if report.get("subgraphs"):
        for sub in report["subgraphs"]:
            rows.append((sub.get("device"), sub.get("name"), sub.get("ops"), ", ".join(sub.get("op_types", []))))
    else:
        rows.append(("DPU", f"{report['dpu_subgraphs']} subgraph(s)", "", ""))
        for op in report.get("cpu_op_details", []):
            rows.append(("CPU", op.get("name"), op.get("type"), op.get("reason")))
        rows.append(("all", f"{report['device_subgraphs']} subgraph(s)", report.get("op_num") or "", ""))
    reporter.table(f"Compiled for {report['target']}: {report['dpu_subgraphs']} DPU subgraph(s), "
                   f"{len(report['cpu_ops'])} op(s) on the CPU", ("device", "subgraph or op", "ops / type",
                                                                  "why on the CPU"), rows, text=True)
    for warning in report.get("warnings", []):
        reporter.warn(warning)
