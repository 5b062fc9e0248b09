"""hostctl inspect: will the model run on this DPU? In seconds, before quantizing, without the Vitis AI image.

    resolve the target (name, --board, --fingerprint, --arch) -> job.json -> the payload's inspect job (local
    runtime: nndct's graph, the deployable graph, the rule-based filters) -> inspect.json, inspect_<target>.txt
    -> the verdict line, the ops left to the CPU, a warning when the model would compile into several DPU
    subgraphs

The target is resolved on the host (container_payload/inspector/targets.py, standard library only) so that a
wrong name is a one-line exit 2 before anything starts, with the names that come close.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from container_payload.inspector import targets
from container_payload.inspector.names import inserted_permute, op_kind
from container_payload.job import BUILTIN_MODEL, INSPECT_REPORT, JOB, InspectJob
from hostctl import warm
from hostctl.errors import EXIT_ENV, EnvironmentProblem, InputError, RunFailed, UsageError
from hostctl.options import DEFAULT_CONDA_ENV, DEFAULT_IMAGE, QuantizeOptions
from hostctl.staged_run import PayloadOutput, run_job, staged_run, tail_hint
from hostctl.staging import check_output_dir
from hostctl.ui import Reporter

DEFAULT_ARTIFACTS = Path("deployment/deployment_artifacts")


@dataclass(frozen=True)
class InspectOptions:
    target: str | None = None
    board: str | None = None
    fingerprint: str | None = None
    arch: Path | None = None
    output_dir: Path | None = None  # default: deployment/deployment_artifacts/inspection_<target>
    input_size: tuple[int, int, int] = (3, 512, 512)
    num_classes: int = 7
    model: str = BUILTIN_MODEL
    model_path: Path | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    python: str | None = None
    # --runtime docker: vai_q_pytorch's own (compiler-backed) Inspector in the image, instead of the emulation
    runtime: str = "local"
    image: str = DEFAULT_IMAGE
    conda_env: str = DEFAULT_CONDA_ENV
    pull: str = "missing"
    requirements: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class InspectSummary:
    status: str
    output_dir: Path
    run_id: str
    target: dict[str, Any]
    summary: dict[str, Any]
    cpu_nodes: list[dict[str, Any]]
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def resolve_target(opts: InspectOptions) -> targets.Target:
    given = [(flag, value) for flag, value in (("--target", opts.target), ("--board", opts.board),
                                               ("--fingerprint", opts.fingerprint), ("--arch", opts.arch))
             if value is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(f for f, _ in given)} both name the DPU",
                         "Pass only one of --target, --board, --fingerprint, --arch.")
    if not given:
        raise UsageError("no DPU target given", "Pass --board kv260 (or zcu102, zcu104, vck190, vek280, v70), "
                                                "--target NAME, --fingerprint 0x... or --arch FILE.")
    flag, value = given[0]
    try:
        if flag == "--board":
            if str(value).lower() not in targets.BOARDS:
                raise ValueError(f"{value!r} is not one of: {', '.join(targets.BOARDS)}")
            return targets.by_name(targets.BOARDS[str(value).lower()])
        if flag == "--fingerprint":
            return targets.by_fingerprint(str(value))
        if flag == "--arch":
            path = Path(value)
            if not path.is_file():
                raise InputError(path, "arch file not found", "Pass your board's arch.json, or --board NAME.")
            return targets.from_arch_json(str(path))
        return targets.by_name(str(value))
    except ValueError as exc:
        raise UsageError(f"{flag} {value}: {exc}", "`hostctl inspect --list-targets` lists every target.") from None


def quantize_target(opts: QuantizeOptions) -> targets.Target | None:
    """The DPU a quantize run names (--target, --board, or --compile's board), or None; a name that is no target,
    or two options naming different DPUs, is a usage error before any work."""
    found: list[tuple[str, str, targets.Target]] = []
    for flag, value in (("--target", opts.target), ("--board", opts.board), ("--compile", opts.compile_board)):
        if value is None:
            continue
        try:
            if flag == "--target":
                target = targets.by_fingerprint(value) if value.lower().startswith("0x") else targets.by_name(value)
            elif value.lower() in targets.BOARDS:
                target = targets.by_name(targets.BOARDS[value.lower()])
            else:
                raise ValueError(f"{value!r} is not one of: {', '.join(targets.BOARDS)}")
        except ValueError as exc:
            raise UsageError(f"{flag} {value}: {exc}", "`hostctl inspect --list-targets` lists every target and "
                                                       "board.") from None
        found.append((flag, value, target))
    if len({t.name for _, _, t in found}) > 1:
        named = " and ".join(f"{flag} {value} ({t.name})" for flag, value, t in found)
        raise UsageError(f"{named} name different DPUs", "Pass the options for one DPU only.")
    return found[0][2] if found else None


@dataclass(frozen=True)
class PreInspection:
    """quantize's inspection before any calibration: inspect.json's content and inspect_<target>.txt's text."""

    target: targets.Target
    report: dict[str, Any]
    text: str
    seconds: float
    pictures: list[str] = field(default_factory=list)  # inspect_graph.svg/.png once write() drew them

    def record(self) -> dict[str, Any]:
        """What run.json and the report keep: the target, the summary, the ops on the CPU with their lines."""
        return {"target": self.report["target"], "summary": self.report["summary"], "seconds": self.seconds,
                "cpu_nodes": [{k: n.get(k) for k in ("name", "op", "constraint", "source")}
                              for n in self.report["nodes"] if n["device"] == "cpu" and n["op"] != "nndct_input"],
                "files": [INSPECT_REPORT, self.text_name, *self.pictures]}

    @property
    def text_name(self) -> str:
        return f"inspect_{self.target.name}.txt"

    def write(self, run_dir: Path, reporter: Reporter | None = None) -> None:
        """inspect.json, inspect_<target>.txt and, with a reporter to warn on, the graph's picture (as `hostctl
        inspect` draws it)."""
        (run_dir / INSPECT_REPORT).write_text(json.dumps(self.report, indent=1, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        (run_dir / self.text_name).write_text(self.text, encoding="utf-8")
        if reporter is not None:
            self.pictures[:] = _draw(self.report, run_dir, reporter)


def inspect_before_quantizing(opts: QuantizeOptions, target: targets.Target, reporter: Reporter) -> PreInspection:
    """The rule-based inspection of the model for target, here on the host, in seconds (the model was imported
    here already to check it): its verdict is shown, and with --dpu-strict more than one DPU subgraph is exit 2
    before any container starts or calibration runs."""
    from container_payload.backends import BackendError
    from container_payload.inspector.run import inspect
    from container_payload.loading import ModelError, build_model
    from hostctl.ui import stdout_to_stderr

    reporter.info(f"inspecting {opts.model.split(':')[-1]} for {target.name} before quantizing")
    t0 = time.perf_counter()
    try:
        with stdout_to_stderr():
            model = build_model(opts.model, str(opts.model_path) if opts.model_path else None, opts.model_args,
                                opts.num_classes).eval()
            report, text = inspect(model, opts.input_size, target)
    except (ModelError, BackendError) as exc:
        raise UsageError(f"--model {opts.model} cannot be inspected for {target.name}: {exc}",
                         "Check --model, --model-path, --model-arg and --input-size (`hostctl inspect` takes the "
                         "same options).") from exc
    found = PreInspection(target, report, text, round(time.perf_counter() - t0, 3))
    cpu_nodes = [n for n in report["nodes"] if n["device"] == "cpu" and n["op"] != "nndct_input"]
    summary = InspectSummary(status="succeeded", output_dir=opts.output_dir, run_id="", target=report["target"],
                             summary=report["summary"], files=[], cpu_nodes=cpu_nodes)
    render(summary, reporter)
    subgraphs = report["summary"]["dpu_subgraphs"]
    if opts.dpu_strict and subgraphs > 1:
        raise UsageError(f"--dpu-strict: the model compiles into {subgraphs} DPU subgraphs on {target.name}, not "
                         "one; nothing was quantized",
                         f"Move the ops listed above off the DPU's path, or drop --dpu-strict. `hostctl inspect "
                         f"--target {target.name}` with the same model options writes inspect.json and the graph.")
    return found


def inspect_model(opts: InspectOptions, reporter: Reporter) -> InspectSummary:
    target = resolve_target(opts)
    if opts.python is not None and opts.runtime != "local":
        raise UsageError("--python applies to --runtime local only", "Drop --python or --runtime docker.")
    if opts.requirements is not None and not opts.requirements.is_file():
        raise InputError(opts.requirements, "requirements file not found", "Fix the --requirements path.")
    output_dir = opts.output_dir or DEFAULT_ARTIFACTS / f"inspection_{target.name}"
    check_output_dir(output_dir, [opts.model_path] if opts.model_path else [])
    fields = {"verb": "inspect", "options": opts.to_dict(), "target": target.name}
    from hostctl import runtime

    in_image = opts.runtime == "docker"
    with staged_run(output_dir, fields, reporter) as run:
        # the docker runtime mounts an input directory read-only: the model's code, or nothing new
        carrier = QuantizeOptions(runtime=opts.runtime, python=opts.python, model=opts.model,
                                  model_path=opts.model_path, model_args=dict(opts.model_args),
                                  input_size=opts.input_size, num_classes=opts.num_classes, image=opts.image,
                                  conda_env=opts.conda_env, pull=opts.pull, requirements=opts.requirements,
                                  input_dir=opts.model_path or run.run_dir,
                                  # one forward: on one thread it is as quick, never slowed by other work, and
                                  # needs no look at the machine's load (a 0.2 s window) first; the payload
                                  # started with the CLI (hostctl/warm.py) was started with these threads
                                  threads=None if in_image else warm.INSPECT_THREADS)
        rt = runtime.create(carrier, run.run_dir, reporter, run.trap)
        rt.prepare()
        run.manifest["runtime"] = rt.describe()
        run.stage.payload_started = True
        job = InspectJob(run_dir=rt.view(run.run_dir), target=target.name, input_size=tuple(opts.input_size),
                         num_classes=opts.num_classes, model=opts.model,
                         model_path=rt.view(opts.model_path) if opts.model_path else None,
                         model_args=dict(opts.model_args), engine="nndct" if in_image else "rules")
        (run.run_dir / JOB).write_text(job.to_json(), encoding="utf-8")
        who = f"vai_q_pytorch's Inspector in {opts.image}" if in_image else "the rule-based emulation"
        reporter.info(f"inspecting {opts.model.split(':')[-1]} for {target.name} ({who})")
        t0 = time.perf_counter()
        drawing = _preload_drawing()
        code, output = run_job(rt, run.run_dir, reporter)
        run.timings["inspect"] = round(time.perf_counter() - t0, 3)
        drawing.join()
        report = verify_inspection(run.run_dir, code, output)
        if in_image and opts.model_path is not None:
            report = _sources_on_the_host(report, rt.view(opts.model_path), opts.model_path.resolve())
            (run.run_dir / INSPECT_REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
        _draw(report, run.run_dir, reporter)
        run.succeed(inspect=report["summary"])
    cpu_nodes = [n for n in report["nodes"] if n["device"] == "cpu" and n["op"] != "nndct_input"]
    return InspectSummary(status="succeeded", output_dir=run.stage.output_dir, run_id=run.run_id,
                          target=report["target"], summary=report["summary"], cpu_nodes=cpu_nodes,
                          files=run.manifest["files"])


def _preload_drawing() -> threading.Thread:
    """matplotlib's import (about half a second) in a thread, while this process only waits for the payload."""
    from hostctl.inspect_picture import preload

    def quietly() -> None:
        with contextlib.suppress(Exception):  # _draw reports a picture that cannot be drawn
            preload()

    thread = threading.Thread(target=quietly, name="hostctl-preload-drawing", daemon=True)
    thread.start()
    return thread


def _draw(report: dict[str, Any], run_dir: Path, reporter: Reporter) -> list[str]:
    """inspect_graph.svg and .png: the DPU and CPU subgraphs (runs of DPU ops collapsed on big graphs). A picture
    that cannot be drawn is a warning: the answer is in inspect.json."""
    from hostctl.inspect_picture import write_pictures

    try:
        return write_pictures(report, run_dir)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reporter.warn(f"the graph's picture could not be drawn ({type(exc).__name__}: {exc}); {INSPECT_REPORT} "
                      "holds the answer")
        return []


def _sources_on_the_host(report: dict[str, Any], inside: str, host: Path) -> dict[str, Any]:
    """The user's lines as this machine names them: the container saw the model's directory at `inside`."""
    for node in report["nodes"]:
        source = node.get("source")
        if source and (source.startswith(inside.rstrip("/") + "/")):
            node["source"] = str(host / source[len(inside.rstrip("/")) + 1:])
    return report


def verify_inspection(run_dir: Path, code: int, output: PayloadOutput) -> dict[str, Any]:
    """Trust files: inspect.json with the fields the contract names."""
    if output.error is not None and code == EXIT_ENV:
        raise EnvironmentProblem(f"the payload's environment: {output.error.get('message')}")
    if output.error is not None:
        raise RunFailed(f"the inspection failed: {output.error.get('kind', 'error')}: {output.error.get('message')}",
                        "See run.log in the failed-run directory.")
    if code != 0:
        raise RunFailed(f"the inspect payload exited with status {code}", tail_hint(list(output.tail)))
    try:
        report = json.loads((run_dir / INSPECT_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFailed(f"the inspection ran but {INSPECT_REPORT} cannot be read ({exc})") from exc
    if not isinstance(report, dict) or not all(k in report for k in ("target", "nodes", "subgraphs", "summary")):
        raise RunFailed(f"{INSPECT_REPORT} lacks target, nodes, subgraphs or summary")
    return report


def verdict(summary: InspectSummary) -> str:
    s = summary.summary
    inserted = sum(1 for name in s["cpu_ops"] if inserted_permute(name))
    cpu = len(s["cpu_ops"]) - inserted
    if not s["cpu_ops"] and s["dpu_subgraphs"] <= 1:
        return f"All ops run on {summary.target['name']}'s DPU, in one DPU subgraph."
    also = f" (and {inserted} layout permute(s) nndct inserts)" if inserted else ""
    return (f"{cpu} op(s) of the model on the CPU{also}; it compiles into {s['dpu_subgraphs']} DPU subgraph(s) on "
            f"{summary.target['name']}.")


def dpu_fact(record: dict[str, Any]) -> str:
    """One line for a quantization report from quantize's inspection record (PreInspection.record)."""
    s = record["summary"]
    ops = [n for n in s["cpu_ops"] if not inserted_permute(n)]
    where = f"{len(ops)} op(s) on the CPU" if ops else "every op on the DPU"
    return f"{record['target']['name']}: {where}, {s['dpu_subgraphs']} DPU subgraph(s) (inspect.json)"


def render(summary: InspectSummary, reporter: Reporter) -> None:
    """The verdict; each op left to the CPU with the user's line that made it, the op and its module, and nndct's
    reason below (a list, not a table: it reads at 80 columns and the file:line is never broken); the permutes
    nndct inserts beside them counted, not listed; the warning on several DPU subgraphs."""
    reporter.info(verdict(summary))
    inserted = [n for n in summary.cpu_nodes if inserted_permute(n["name"])]
    for node in summary.cpu_nodes:
        if inserted_permute(node["name"]):
            continue
        where = _short_source(node.get("source")) or "(no line of yours)"
        op = op_kind(node["op"])
        reporter.info(f"  {where}  {op}  in {_module_path(node['name'])}")
        if node.get("constraint"):
            reporter.info(f"      {' '.join(str(node['constraint']).split())}")
    if inserted:
        reporter.info(f"  and {len(inserted)} layout permute(s) nndct inserts beside them (NCHW <-> NHWC), on the "
                      f"CPU with them: see {INSPECT_REPORT}")
    if summary.summary["dpu_subgraphs"] > 1:
        reporter.warn(f"{summary.summary['dpu_subgraphs']} DPU subgraphs: the board runners most people start from "
                      "(VART samples, Vitis AI Library) take one. Move the ops above off the DPU's path, or run "
                      "the graph with a runner that handles several subgraphs.")


def _short_source(source: str | None) -> str | None:
    """`/home/me/src/net.py:42` -> `net.py:42`, or relative to the current directory when it lies below it."""
    if not source:
        return None
    path, _, line = source.rpartition(":")
    try:
        shown = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        shown = Path(path).name
    return f"{shown}:{line}"


def _module_path(name: str) -> str:
    """`Net::Net/Sequential[enc]/Conv2d[0]/ret.3` -> `Net/Sequential[enc]/Conv2d[0]`: the module that made the op."""
    scope = name.split("::", 1)[-1]
    return scope.rsplit("/", 1)[0] if "/" in scope else scope
