#!/usr/bin/env python3
"""Regenerate the inspection references (tests/inspect_golden/refs/<model>-<target>.json) with vai_q_pytorch 3.5's
rule-based Inspector.

    scripts/make_inspect_golden.py --nndct-python /path/to/venv/bin/python --utf-path DIR \
        [--only NAME ...] [--targets T ...] [--out DIR] [--jobs N]

Models: the 36 architectures of tests/golden/zoo.py (batch 1 of zoo.INPUT_SIZE) and the op models of
tests/inspect_golden/ops_zoo.py (their own input sizes). For each model and target a fresh worker process under
--nndct-python runs `Inspector(target).inspect(model, (x,), device=cpu, output_dir=tmp)` with the rule-based
inspector (`--nndct_use_old_inspector`, pytorch_nndct/hardware), parses the inspect_<target>.txt it writes and
writes the reference. A fresh process per reference: nndct reads its options from sys.argv once, at import, and
keeps graph state in globals.

--utf-path is a directory holding the `vai_utf` stand-in package (Xilinx's is not public); the worker puts it first
on sys.path. tests/inspect_golden/README.md says how to build it from the public target_factory sources.

In the worker, nndct's DevGraphOptimizer.layout_tranform is wrapped (monkeypatched, in that process only) to run
`update_node_data()` and `convert_adaptive_pool_to_pool()` right after it, export's own order
(pytorch_nndct/qproc/utils.py _deploy_optimize): without them the Inspector's graph has adaptive pools without a
kernel and every one raises `AttributeError: KERNEL`. An adaptive pool whose output does not divide its input stays
adaptive and still raises: the reference then records the error (and no nodes) instead of failing.

Where a reference existed, the script says whether regenerating it changed anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
INSPECT = ROOT / "tests" / "inspect_golden"
REFS = INSPECT / "refs"
FORMAT = 1
TARGETS = ["DPUCZDX8G_ISA1_B4096", "DPUCZDX8G_ISA1_B512", "DPUCVDX8G_ISA3_C32B3", "DPUCV2DX8G_ISA1_C20B14",
           "DPUCAHX8H_ISA2"]


def model_names() -> list[str]:
    sys.path.insert(0, str(GOLDEN))
    sys.path.insert(0, str(INSPECT))
    import ops_zoo
    import zoo

    return list(zoo.ZOO) + list(ops_zoo.NAMES)


def main() -> int:
    names = model_names()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nndct-python", required=True, help="interpreter that imports pytorch_nndct")
    parser.add_argument("--utf-path", required=True, type=Path, help="directory holding the vai_utf stand-in")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=names, help="these models")
    parser.add_argument("--targets", nargs="+", metavar="T", default=TARGETS, help="DPU target names")
    parser.add_argument("--out", type=Path, default=REFS, help="directory for the references")
    parser.add_argument("--jobs", type=int, default=1, help="workers at a time (each uses 1 torch thread)")
    args = parser.parse_args()
    if not (args.utf_path / "vai_utf" / "python" / "target_factory.py").is_file():
        parser.error(f"{args.utf_path} holds no vai_utf/python/target_factory.py")

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, t) for m in (args.only or names) for t in args.targets]
    start = time.monotonic()
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for line, ok, key in pool.map(lambda job: run_one(args, *job), jobs):
            print(line, flush=True)
            if not ok:
                failed.append(key)
    print(f"{len(jobs)} references in {time.monotonic() - start:.0f}s", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def run_one(args, model: str, target: str) -> tuple[str, bool, str]:
    key = f"{model}-{target}"
    dest = args.out / f"{key}.json"
    with tempfile.TemporaryDirectory(prefix=f"inspect-{key}-") as work:
        log = Path(work) / "nndct.log"
        out = Path(work) / "ref.json"
        begin = time.monotonic()
        with open(log, "w") as f:
            try:
                rc = subprocess.call(
                    [args.nndct_python, str(Path(__file__).resolve()), "--worker", model, target, str(out),
                     str(args.utf_path.resolve())],
                    cwd=work, stdout=f, stderr=subprocess.STDOUT, timeout=3600,
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"})
            except subprocess.TimeoutExpired:
                rc = "timeout"
        took = time.monotonic() - begin
        if rc != 0 or not out.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            return f"{key}: FAILED (exit {rc}) after {took:.0f}s:\n    " + "\n    ".join(tail), False, key
        before = json.loads(dest.read_text()) if dest.is_file() else None
        os.replace(out, dest)
    ref = json.loads(dest.read_text())
    cpu = sum(1 for n in ref["nodes"] if n["device"] == "cpu")
    what = (f"ERROR {ref['error']}" if "error" in ref else
            f"{len(ref['nodes'])} nodes, {cpu} on cpu, subgraphs {ref['subgraphs']}")
    line = f"{key}: {what} ({took:.1f}s, {dest.stat().st_size // 1024} KB)"
    if before is not None:
        line += " unchanged" if before == ref else " CHANGED: " + ", ".join(
            k for k in sorted(set(before) | set(ref)) if before.get(k) != ref.get(k))
    return line, True, key


def dumps(ref: dict) -> str:
    """Indented JSON with one node per line: small, and a diff shows which node moved."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in ref.items() if k != "nodes"]
    nodes = ",\n".join("  " + json.dumps(n) for n in ref["nodes"])
    text = "{\n" + ",\n".join(head) + ',\n "nodes": [' + ("\n" + nodes + "\n ]" if nodes else "]") + "\n}\n"
    assert json.loads(text) == ref
    return text


# --- worker (runs under the nndct Python, in a scratch directory) -----------------------------------------------

def parse_inspect_txt(text: str) -> list[dict]:
    """The node sections of inspect_<target>.txt, in its order, as references keep them: name, op type, output
    shapes (NHWC, as written), assigned device, hardware constraints, node messages (sorted: nndct keeps them in a
    set). The reading is hostctl's own (container_payload/inspector/nndct_text.py, which `inspect --runtime docker`
    uses on the image's file); attributes, inputs and source ranges (stack traces) are left out."""
    sys.path.insert(0, str(ROOT))
    from container_payload.inspector.nndct_text import parse_nodes

    keep = ("name", "op", "shape", "device", "constraint", "messages")
    return [{k: node[k] for k in keep} for node in parse_nodes(text)]


def worker(model: str, target: str, dest: str, utf_path: str) -> None:
    sys.argv.append("--nndct_use_old_inspector")  # nndct reads and strips it at import
    sys.path.insert(0, utf_path)
    sys.path.insert(0, str(GOLDEN))
    sys.path.insert(0, str(INSPECT))
    sys.setrecursionlimit(100000)  # nndct's subgraph walk recurses along every chain of nodes
    from collections import defaultdict

    import google.protobuf
    import numpy as np
    import ops_zoo
    import pytorch_nndct
    import torch
    import zoo
    from nndct_shared.base import NNDCT_OP
    from nndct_shared.compile import DevGraphOptimizer
    from pytorch_nndct.apis import Inspector
    from vai_utf.python import target_factory

    layout_tranform = DevGraphOptimizer.layout_tranform

    def layout_tranform_then_export_order(self):
        layout_tranform(self)
        self.update_node_data()  # tensors to NHWC, as _deploy_optimize does after layout_tranform
        self.convert_adaptive_pool_to_pool()  # reads those NHWC shapes; gives each dividing pool a kernel

    DevGraphOptimizer.layout_tranform = layout_tranform_then_export_order
    torch.set_num_threads(1)

    if model in zoo.ZOO:
        net = zoo.build(model)
        size = list(zoo.INPUT_SIZE)
        x = torch.from_numpy(zoo.inputs(model)[1][:1].copy())
    else:
        net = ops_zoo.build(model)
        size = list(ops_zoo.input_size(model))
        x = torch.from_numpy(ops_zoo.inputs(model))

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # InspectorImpl prints the target's name, type and isa_version
        inspector = Inspector(target)
    sys.stdout.write(printed.getvalue())
    basic = dict(line.split(": ", 1) for line in printed.getvalue().splitlines() if ": " in line)
    dpu_target = inspector._inspector_impl._target.get_devices()[0].get_legacy_dpu_target()

    versions = {"torch": torch.__version__, "pytorch_nndct": pytorch_nndct.__version__, "numpy": np.__version__,
                "protobuf": google.protobuf.__version__, "vitis_ai_commit": target_factory.source_commit()}
    for mod in ("torchvision", "timm", "segmentation_models_pytorch"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    ref = {
        "format": FORMAT,
        "model": model,
        "target": target,
        "inspector": "rule-based",
        "input_size": size,
        "batch": int(x.shape[0]),
        "seed": zoo.SEED,
        "versions": versions,
        "type": basic.get("type"),
        "isa_version": int(basic["isa_version"]) if "isa_version" in basic else None,
        # nndct does not print it: target_factory's type << 56 | isa_version << 48 | feature_code of the definition
        "fingerprint": dpu_target.fingerprint,
    }
    try:
        inspector.inspect(net, (x,), device=torch.device("cpu"), output_dir="inspect_out")
    except Exception as e:  # noqa: BLE001 - what nndct raised is the reference
        ref["error"] = f"{type(e).__name__}: {e}"
        tb, node, where = e.__traceback__, None, None
        while tb is not None:
            code = tb.tb_frame.f_code
            where = f"{code.co_filename.split('pytorch_binding/')[-1]}:{code.co_name}"
            candidate = tb.tb_frame.f_locals.get("node")
            if hasattr(candidate, "name") and hasattr(candidate, "op"):
                node = {"name": candidate.name, "op": candidate.op.type, "in": where}
            tb = tb.tb_next
        ref["error_where"] = where  # the innermost frame: nndct's file and function
        if node is not None:  # the `node` local of the innermost frame that has one, and that frame
            ref["error_node"] = node
        ref["nodes"] = []
    else:
        impl = inspector._inspector_impl
        # The subgraphs nndct's own dot export draws (InspectorImpl.export_dot_image: one cluster per subgraph)
        by_device = defaultdict(list)
        for node in impl._graph.nodes:
            if node.op.type != NNDCT_OP.RETURN:
                by_device[node.target_device.get_device_type()].append(node)
        counts = {"dpu": 0, "cpu": 0}
        for device_type, nodes in by_device.items():
            subgraphs, _ = impl._get_subgraphs_and_output_boundaries(nodes, device_type)
            counts[device_type.value] = len(subgraphs)
        ref["subgraphs"] = counts
        with open(f"inspect_out/inspect_{dpu_target.get_name()}.txt") as f:
            ref["nodes"] = parse_inspect_txt(f.read())
    with open(dest, "w") as f:
        f.write(dumps(ref))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, model, target, dest, utf_path = sys.argv[:6]
        del sys.argv[1:]
        worker(model, target, dest, utf_path)
    else:
        sys.exit(main())
