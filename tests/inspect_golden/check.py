"""Compare hostctl's deployable graph and partition with the references of vai_q_pytorch's rule-based Inspector.

    python tests/inspect_golden/check.py [--only NAME ...] [--targets T ...] [--refs DIR] [--jobs N] [--diff N]

Runs under the golden Python (torch, torchvision, timm, segmentation_models_pytorch; no nndct). For every
reference tests/inspect_golden/refs/<model>-<target>.json it rebuilds the model and its input as
scripts/make_inspect_golden.py did, captures it (container_payload.graph.nndct.capture, ReLU6 modules as ReLU: the
Inspector's prepare_quantizable_module runs with equalization on), builds the deployable graph
(container_payload.inspector.deploy), allocates it for the target (partition.allocate) and prints one JSON line:

  nodes                 [ours, nndct's] node counts (the graph's return left out, as nndct's file does)
  order                 whether the op types come in nndct's order, one for one
  op / shape / device / constraint / messages / name
                        [matched, total]: nndct's nodes whose field ours equals, nodes paired in order (by
                        difflib on the op types where the counts differ)
  subgraphs             {"dpu": [ours, nndct's], "cpu": [...]}
  error                 for a reference where nndct raised: [what hostctl predicts nndct raises, nndct's error],
                        error_node and error_node_name [ours, nndct's]: the op type and name of the node it
                        fails on; error_agrees: error and op type equal
  failed                what hostctl raised, if it did
  differences           with --diff N: the first N nodes that differ, [field, ours, nndct's, nndct's name]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFS = HERE / "refs"
FIELDS = ("op", "shape", "device", "constraint", "messages", "name")
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "golden"), str(HERE)]


def _ours(model: str):
    import ops_zoo
    import torch
    import zoo

    from container_payload.graph.nndct import capture
    from container_payload.inspector.deploy import deployable_graph

    torch.set_num_threads(1)
    if model in zoo.ZOO:
        net = zoo.build(model)
        x = torch.from_numpy(zoo.inputs(model)[1][:1].copy())
    else:
        net = ops_zoo.build(model)
        x = torch.from_numpy(ops_zoo.inputs(model))
    net.eval()
    g = capture(net, x, relu6_as_relu=True, nndct_names=True)
    return deployable_graph(g)


def _row(n) -> dict:
    return {"name": n.name, "op": n.op, "shape": n.out_shapes, "device": n.device, "constraint": n.constraint,
            "messages": sorted(n.messages)}


def _pairs(ours: list, theirs: list) -> list:
    """Index pairs (ours, nndct's) of the nodes compared: one for one when the op types agree in order, else
    the blocks difflib matches on the op types."""
    a, b = [n["op"] for n in ours], [n["op"] for n in theirs]
    if a == b:
        return [(i, i) for i in range(len(a))]
    pairs = []
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        pairs += [(block.a + k, block.b + k) for k in range(block.size)]
    return pairs


def check(path: Path, diff: int = 0) -> dict:
    from container_payload.inspector import partition
    from container_payload.inspector.deploy import nndct_failure
    from container_payload.inspector.targets import by_name

    ref = json.loads(path.read_text())
    line: dict = {"ref": path.stem}
    try:
        nodes = _ours(ref["model"])
        partition.allocate(nodes, by_name(ref["target"]))
    except Exception as e:  # noqa: BLE001 - reported, the other references go on
        line["failed"] = f"{type(e).__name__}: {e}"
        line["traceback"] = traceback.format_exc().splitlines()[-4:]
        return line
    failure = nndct_failure(nodes)
    if "error" in ref:
        by_name_ = {n.name: n for n in nodes}
        ours_node = by_name_.get(failure[1]) if failure else None
        line["error"] = [failure[0] if failure else None, ref["error"]]
        theirs_node = ref.get("error_node", {})
        line["error_node"] = [ours_node.op if ours_node else None, theirs_node.get("op")]
        # where nndct fails in its optimizer (equalization), the node its traceback holds is no node of the graph
        # that fails (the loop variable of the caller, the input): the error alone is compared
        in_optimizer = "nndct_shared/optimization/" in theirs_node.get("in", "")
        line["error_agrees"] = bool(failure) and failure[0] == ref["error"] and (
            in_optimizer or line["error_node"][0] == line["error_node"][1])
        line["error_node_name"] = [failure[1] if failure else None, theirs_node.get("name")]
        return line
    if failure:
        line["predicted_error"] = list(failure)
    ours = [_row(n) for n in nodes if n.op != partition.RETURN]
    theirs = ref["nodes"]
    pairs = _pairs(ours, theirs)
    line["nodes"] = [len(ours), len(theirs)]
    line["order"] = [n["op"] for n in ours] == [n["op"] for n in theirs]
    differences = []
    for field in FIELDS:
        same = [(i, j) for i, j in pairs if ours[i][field] == theirs[j][field]]
        line[field] = [len(same), len(theirs)]
        if diff:
            differences += [[field, ours[i][field], theirs[j][field], theirs[j]["name"]]
                            for i, j in pairs if ours[i][field] != theirs[j][field]]
    groups = partition.subgraphs(nodes)
    line["subgraphs"] = {k: [len(groups[k]), ref["subgraphs"][k]] for k in ("dpu", "cpu")}
    if diff:
        paired_ours, paired_theirs = {i for i, _ in pairs}, {j for _, j in pairs}
        differences += [["extra", ours[i]["op"], None, ours[i]["name"]] for i in range(len(ours))
                        if i not in paired_ours]
        differences += [["missing", None, theirs[j]["op"], theirs[j]["name"]] for j in range(len(theirs))
                        if j not in paired_theirs]
        line["differences"] = differences[:diff]
    return line


def _worker(path: str, diff: int) -> str:
    return json.dumps(check(Path(path), diff))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these models")
    parser.add_argument("--targets", nargs="+", metavar="T", help="these targets")
    parser.add_argument("--refs", type=Path, default=REFS)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--diff", type=int, default=0, metavar="N", help="list the first N differences")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(_worker(args.worker[0], int(args.worker[1])), flush=True)
        return 0
    paths = []
    for p in sorted(args.refs.glob("*.json")):
        model, _, target = p.stem.rpartition("-")
        if (args.only and model not in args.only) or (args.targets and target not in args.targets):
            continue
        paths.append(p)

    def run(p: Path) -> str:
        out = subprocess.run([sys.executable, __file__, "--worker", str(p), str(args.diff)], capture_output=True,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        return lines[-1] if lines else json.dumps({"ref": p.stem, "failed": out.stderr.strip()[-400:]})

    bad = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for text in pool.map(run, paths):
            print(text, flush=True)
            line = json.loads(text)
            if "failed" in line or line.get("error_agrees") is False or (
                    "nodes" in line and not all(line[f][0] == line[f][1] for f in FIELDS if f != "name")):
                bad += 1
    print(json.dumps({"references": len(paths), "disagreeing": bad}), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
