"""The payload's inspect job: nndct's graph of the model -> its deployable graph -> the device of every op ->
inspect.json and inspect_<target>.txt in the run directory (DESIGN.md section 11, issue 20).

No weights are needed: where each op runs depends on the model's structure and shapes alone.
"""

import json
import os
import shutil
from typing import Any, Dict, List, Sequence, Tuple

import torch

from container_payload.backends import BackendError, MissingInEnvironment
from container_payload.events import Phase, run_job_file
from container_payload.job import INSPECT_REPORT, InspectJob
from container_payload.loading import build_model

from . import targets
from .filters import DevNode
from .nndct_text import parse_nodes
from .partition import CPU, DPU, RETURN, allocate, count_subgraphs, subgraphs

SCHEMA = 1
SEPARATOR = "=" * 160


def execute(job: InspectJob) -> Dict[str, Any]:
    target = targets.resolve(job.target)
    with Phase("inspect", 1, unit="models") as phase:
        model = build_model(job.model, job.model_path, job.model_args, job.num_classes).eval()
        if job.engine == "nndct":
            report, text = inspect_with_nndct(model, job.input_size, target, job.run_dir)
        else:
            report, text = inspect(model, job.input_size, target)
        phase.advance(1)
    write_json(os.path.join(job.run_dir, INSPECT_REPORT), report)
    txt = text_name(target)
    with open(os.path.join(job.run_dir, txt), "w", encoding="utf-8") as f:
        f.write(text)
    return {"status": "succeeded", "files": [INSPECT_REPORT, txt], "summary": report["summary"]}


def inspect(model: torch.nn.Module, input_size: Sequence[int], target: targets.Target) -> Tuple[Dict[str, Any], str]:
    """inspect.json's content and inspect_<target>.txt's text for the model on an input of input_size (C, H, W)."""
    from container_payload.graph.nndct import capture

    from .deploy import deployable_graph

    torch.manual_seed(0)
    sample = torch.randn((1,) + tuple(int(d) for d in input_size))
    with torch.no_grad():
        # as the Inspector parses: equalization on (ReLU6 modules as ReLU), traced as nndct traces, for its names
        g = capture(model, sample, relu6_as_relu=True, nndct_names=True, check_forward=False)
    nodes = deployable_graph(g)
    allocate(nodes, target)
    return to_report(nodes, target), nndct_text(nodes, target, g.prefix)


def inspect_with_nndct(model: torch.nn.Module, input_size: Sequence[int], target: targets.Target,
                       run_dir: str) -> Tuple[Dict[str, Any], str]:
    """vai_q_pytorch's own default Inspector (the compiler-backed one, in the Vitis AI image) on the model: its
    inspect_<target>.txt, read back into inspect.json's shape (nodes, subgraphs as connected nodes on one device,
    summary)."""
    try:
        from pytorch_nndct.apis import Inspector
    except ImportError as exc:
        raise MissingInEnvironment(
            "pytorch_nndct does not import here ({}: {}), so vai_q_pytorch's Inspector cannot run; hostctl's "
            "emulation of its rule-based Inspector needs no image: run `hostctl inspect` without --runtime "
            "docker".format(type(exc).__name__, exc)) from exc
    import tempfile

    torch.manual_seed(0)
    sample = torch.randn((1,) + tuple(int(d) for d in input_size))
    scratch = tempfile.mkdtemp(prefix="nndct-inspect-", dir=run_dir)
    try:
        Inspector(target.name).inspect(model, (sample,), device=torch.device("cpu"), output_dir=scratch)
        path = os.path.join(scratch, text_name(target))
        if not os.path.isfile(path):
            raise BackendError("vai_q_pytorch's Inspector ran but wrote no {}".format(text_name(target)))
        with open(path, encoding="utf-8") as f:
            text = f.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        nodes = parse_nodes(text)
    except ValueError as exc:
        raise BackendError("{} of vai_q_pytorch's Inspector cannot be read: {}".format(text_name(target),
                                                                                            exc)) from exc
    return report_from_nodes(nodes, target, engine=_nndct_version()), text


def _nndct_version() -> Dict[str, Any]:
    try:
        import pytorch_nndct

        version = str(getattr(pytorch_nndct, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - imported just before
        version = "unknown"
    return {"name": "vai_q_pytorch Inspector", "version": version}


def report_from_nodes(nodes: List[Dict[str, Any]], target: targets.Target,
                      engine: Dict[str, Any]) -> Dict[str, Any]:
    """inspect.json from nodes read off an inspect_<target>.txt, its subgraphs counted as nndct's Inspector counts
    them (partition.count_subgraphs)."""
    index = {n["name"]: i for i, n in enumerate(nodes)}
    children: List[List[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for parent in n.get("inputs", []):
            if parent in index:
                children[index[parent]].append(i)
    found = count_subgraphs(len(nodes), lambda i: nodes[i]["device"],
                            lambda i: [index.get(p) for p in nodes[i].get("inputs", [])], children.__getitem__)
    groups = {device: [[nodes[i]["name"] for i in group] for group in found[device]] for device in (DPU, CPU)}
    cpu_ops = [n["name"] for n in nodes if n["device"] == CPU and n["op"] != "nndct_input"]
    return {
        "schema": SCHEMA,
        "engine": engine,
        "target": {"name": target.name, "type": target.type, "isa_version": target.isa_version,
                   "fingerprint": target.fingerprint_hex},
        "nodes": nodes,
        "subgraphs": [{"device": device, "nodes": group} for device in (DPU, CPU) for group in groups[device]],
        "summary": {"dpu_subgraphs": len(groups[DPU]), "cpu_subgraphs": len(groups[CPU]), "cpu_ops": cpu_ops},
    }


def text_name(target: targets.Target) -> str:
    return "inspect_{}.txt".format(target.name)


def to_report(nodes: List[DevNode], target: targets.Target) -> Dict[str, Any]:
    """inspect.json: the target, every node in nndct's order, the DPU and CPU subgraphs, a summary."""
    shown = [n for n in nodes if n.op != RETURN]
    groups = subgraphs(nodes)
    cpu_ops = [n.name for n in shown if n.device == CPU and n.op != "nndct_input"]
    return {
        "schema": SCHEMA,
        "engine": {"name": "hostctl rule-based", "emulates": "vai_q_pytorch 3.5 rule-based Inspector"},
        "target": {"name": target.name, "type": target.type, "isa_version": target.isa_version,
                   "fingerprint": target.fingerprint_hex},
        "nodes": [{"name": n.name, "op": n.op, "shape": n.out_shapes, "device": n.device,
                   "constraint": n.constraint, "messages": list(n.messages), "source": n.attr("source"),
                   "inputs": [p.name for p in n.parents if p.op != RETURN]}
                  for n in shown],
        "subgraphs": [{"device": device, "nodes": [n.name for n in group]}
                      for device in (DPU, CPU) for group in groups[device]],
        "summary": {"dpu_subgraphs": len(groups[DPU]), "cpu_subgraphs": len(groups[CPU]), "cpu_ops": cpu_ops},
    }


def write_json(path: str, data: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")


def nndct_text(nodes: List[DevNode], target: targets.Target, graph_name: str) -> str:
    """inspect_<target>.txt as vai_q_pytorch's Inspector writes it (pytorch_nndct/hardware/inspector.py
    _dump_comment and _dump_body); the target info is target_factory's definition (nndct prints vai_utf's
    rendering of the same message, which is not public)."""
    out = [_COMMENT, SEPARATOR, "target info:", SEPARATOR, json.dumps(target.to_dict(), indent=2), "", SEPARATOR,
           "inspection summary:", SEPARATOR]
    cpu = [[n.name, n.op, n.constraint or ""] for n in nodes if n.op != RETURN and n.device == CPU]
    if cpu:
        out += ["The operators assigned to the CPU are as follows:", simple_table(
            ["node name", "op Type", "hardware constraints"], cpu)]
    else:
        out.append("All the operators are assigned to the DPU.")
    out += [SEPARATOR, "graph name: {}".format(graph_name)]
    for n in nodes:
        if n.op == RETURN:
            continue
        out += [SEPARATOR, "node name: {}".format(n.name),
                "input nodes: {}".format([p.name for p in n.parents]),
                "output nodes: {}".format([c.name for c in n.children]),
                "op type: {}".format(n.op), "outputs shape: {}".format(n.out_shapes), "op attributes:"]
        out += ["  {}: {}".format(k, v) for k, v in sorted(n.attrs.get("xir", {}).items())]
        if n.device:
            out.append("assigned device: {}".format(n.device.upper()))
            if n.constraint:
                out.append("hardware constraints: {}".format(n.constraint))
        if n.messages:
            out += ["node messages:"] + ["  {}".format(m) for m in n.messages]
        if n.attr("source"):
            out += ["source range:", str(n.attr("source"))]
    return "\n".join(out) + "\n"


def simple_table(headers: List[str], rows: List[List[str]]) -> str:
    """tabulate's default ("simple") format, which nndct uses: columns padded, dashes under the headers."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


_COMMENT = """# The 'inspect.txt' file is used to show all the details of each operation in NN model.
# Field Description:
# target info: target device information.
# inspection summary: summary report of inspection# graph name: The name of graph representing of the NN model.
# node name: The name of node in graph.
# input nodes: The parents of the node.
# output nodes: The children of node.
# op type: The type of operation.
# output shape: The shape of node output tensor(Data layout follows XIR requirements).
# op attributes: The attributes of operation.(The description is consistent with that of XIR)
# assigend device: The device type on which the operation execute.
# hardware constrains: If the operation is assigned to cpu. This filed will give some hits about why the DPU \
does not support this operation.
# node messages: This filed will give some extra information about the node.(For example, if quantizer need to \
insert a permute operation to convert data layout from 'NCHW' to 'NHWC' or from 'NCHW' to 'NHWC' for deployment. \
This message will be add to node_messages.)
# source range: points to a source which is a stack track and helps to find the exact location of this operation \
in source code.
"""


def main(job_path: str) -> int:
    return run_job_file(job_path, InspectJob.from_json, execute)
