"""The compile step: vai_c_xir on a quantized xmodel, its log read into compile.json.

Runs where the compiler is (the Vitis AI image's conda env). The compiler's output goes to stdout line by
line, as the payload's own log; this module, not the host, reads the free text (DESIGN.md section 5), and,
where the XIR Python bindings import, also the compiled graph's subgraphs. It writes compile.json beside the
compiler's outputs:

    {"target": "DPUCZDX8G_ISA1_B4096", "device_subgraphs": 3, "dpu_subgraphs": 1, "cpu_ops": [...], ...}
"""

import json
import os
import re
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional

from container_payload.events import Phase, log, run_job_file, warn
from container_payload.job import (
    COMPILE_REPORT,
    COMPILER,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    CompileJob,
    CompileStep,
)

TAIL = 15
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TARGET = re.compile(r"\[UNILOG\]\[INFO\] Target architecture: (\S+)")
GRAPH = re.compile(r"\[UNILOG\]\[INFO\] Graph name: (.+?), with op num: (\d+)")
SUBGRAPHS = re.compile(r"\[UNILOG\]\[INFO\] Total device subgraph number (\d+), DPU subgraph number (\d+)")
CPU_OP = re.compile(r"\[UNILOG\]\[WARNING\] xir::Op\{name = (.+?), type = ([^}]+?)\} has been assigned to CPU"
                    r"(?:: ?|\.?)(.*)$")
OUTPUTS = ("{net}.xmodel", "meta.json", "md5sum.txt")


class CompilerMissing(RuntimeError):
    """No vai_c_xir here, or no arch file: the environment's fault, not the model's."""

    quiet = True  # the message says it all: no traceback
    exit_code = EXIT_ENVIRONMENT


class ArchMissing(CompilerMissing):
    """The image has no arch.json where the board's should be."""


class CompileFailed(RuntimeError):
    """vai_c_xir failed or left its outputs missing; the message ends with its last lines."""

    quiet = True
    exit_code = EXIT_FAILED


def parse_log(lines: List[str]) -> Dict[str, Any]:
    """What the compiler said: target, graph, subgraph counts and the ops it put on the CPU (with why)."""
    report = {"target": None, "graph": None, "op_num": None, "device_subgraphs": None, "dpu_subgraphs": None,
              "cpu_ops": [], "cpu_op_details": []}  # type: Dict[str, Any]
    for raw in lines:
        line = ANSI.sub("", raw).strip()
        match = TARGET.search(line)
        if match:
            report["target"] = match.group(1)
        match = GRAPH.search(line)
        if match:
            report["graph"], report["op_num"] = match.group(1), int(match.group(2))
        match = SUBGRAPHS.search(line)
        if match:
            report["device_subgraphs"], report["dpu_subgraphs"] = int(match.group(1)), int(match.group(2))
        match = CPU_OP.search(line)
        if match:
            name, kind, reason = match.group(1), match.group(2).strip(), match.group(3).strip()
            report["cpu_ops"].append(name)
            report["cpu_op_details"].append({"name": name, "type": kind, "reason": reason})
    return report


def inspect_xmodel(path: str) -> Optional[List[Dict[str, Any]]]:
    """The compiled graph's subgraphs (name, device, op count, CPU ops), or None without the XIR bindings."""
    try:
        import xir  # only in the Vitis AI image; without it the log is all we have
    except ImportError:
        return None
    graph = xir.Graph.deserialize(path)
    subgraphs = []
    for child in graph.get_root_subgraph().toposort_child_subgraph():
        device = child.get_attr("device") if child.has_attr("device") else "UNKNOWN"
        ops = list(child.get_ops())
        entry = {"name": child.get_name(), "device": device, "ops": len(ops)}  # type: Dict[str, Any]
        if device == "CPU":
            entry["op_names"] = [op.get_name() for op in ops]
            entry["op_types"] = [op.get_type() for op in ops]
        subgraphs.append(entry)
    return subgraphs


def multi_dpu_warning(dpu_subgraphs: Optional[int], cpu_ops: List[str]) -> Optional[str]:
    if dpu_subgraphs is None or dpu_subgraphs <= 1:
        return None
    where = " (ops on the CPU: {})".format(", ".join(cpu_ops[:3]) + (", ..." if len(cpu_ops) > 3 else "")) \
        if cpu_ops else ""
    return ("the compiled model has {} DPU subgraphs{}; the board runtimes most users start from (VART samples, "
            "Vitis AI Library) accept exactly one: replace or move those ops".format(dpu_subgraphs, where))


def run_compiler(xmodel: str, step: CompileStep, on_warning: Callable[[str], None]) -> Dict[str, Any]:
    """vai_c_xir -x xmodel -a arch -o output_dir -n net; returns the report it also writes to compile.json."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise CompilerMissing("{} is not on the PATH of this environment (conda env {})".format(
            COMPILER, os.environ.get("CONDA_DEFAULT_ENV", "?")))
    if not os.path.isfile(step.arch):
        raise ArchMissing("no arch file {}{}".format(
            step.arch, " for board {}".format(step.board) if step.board else ""))
    net = step.net_name or re.sub(r"_int$", "", os.path.splitext(os.path.basename(xmodel))[0])
    os.makedirs(step.output_dir, exist_ok=True)
    argv = [compiler, "-x", xmodel, "-a", step.arch, "-o", step.output_dir, "-n", net]
    log("running {}".format(" ".join(argv)))
    lines = []  # type: List[str]
    start = time.perf_counter()
    with Phase("compile", 1, unit="models") as phase:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            log(line)
        code = process.wait()
        if code != 0:
            raise CompileFailed("{} exited with status {}; its last lines:\n  {}".format(
                COMPILER, code, "\n  ".join(ANSI.sub("", line) for line in lines[-TAIL:])))
        phase.advance(1)
    missing = [name.format(net=net) for name in OUTPUTS
               if not os.path.isfile(os.path.join(step.output_dir, name.format(net=net)))]
    if missing:
        raise CompileFailed("{} exited with status 0 but did not write {}".format(COMPILER, ", ".join(missing)))
    report = parse_log(lines)
    report.update(net_name=net, board=step.board, arch=step.arch, xmodel=net + ".xmodel",
                  seconds=round(time.perf_counter() - start, 3), subgraphs=None, source="log")
    try:
        report["subgraphs"] = inspect_xmodel(os.path.join(step.output_dir, net + ".xmodel"))
    except Exception as exc:  # noqa: BLE001 - the log's figures stand; say why the graph could not be read
        on_warning("could not read the compiled xmodel with XIR: {}".format(exc))
    if report["subgraphs"] is not None:
        report["source"] = "log+xmodel"
        devices = [s["device"] for s in report["subgraphs"]]
        if report["device_subgraphs"] is None:
            report["device_subgraphs"] = len(devices)
        if report["dpu_subgraphs"] is None:
            report["dpu_subgraphs"] = devices.count("DPU")
        if not report["cpu_ops"]:
            report["cpu_ops"] = [n for s in report["subgraphs"] for n in s.get("op_names", [])]
    if report["dpu_subgraphs"] is None:
        on_warning("the compiler's log did not give its subgraph counts")
    warning = multi_dpu_warning(report["dpu_subgraphs"], report["cpu_ops"])
    report["warnings"] = [warning] if warning else []
    report["files"] = sorted([name.format(net=net) for name in OUTPUTS] + [COMPILE_REPORT])
    with open(os.path.join(step.output_dir, COMPILE_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def main_job(job_path: str) -> int:
    """hostctl compile's payload: the compile step alone; compile.json is its result."""

    def work(job: CompileJob) -> Dict[str, Any]:
        report = run_compiler(job.xmodel, job.compile, warn)
        return {"status": "succeeded", "path": os.path.join(job.compile.output_dir, COMPILE_REPORT),
                "dpu_subgraphs": report["dpu_subgraphs"]}

    return run_job_file(job_path, CompileJob.from_json, work)
