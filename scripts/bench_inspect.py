#!/usr/bin/env python3
"""One timed inspection in this interpreter (run by `scripts/bench.py inspect`, never alone):

    bench_inspect.py hostctl MODEL TARGET   hostctl's emulation (container_payload.inspector.run.inspect), with
                                            its stages: capture (the traces), deployable graph, filters
    bench_inspect.py nndct MODEL TARGET UTF vai_q_pytorch's rule-based Inspector (needs pytorch_nndct and the
                                            vai_utf stand-in of tests/inspect_golden/README.md at UTF)

MODEL is lraspp (torchvision's LR-ASPP MobileNetV3-Large, 3x512x512; needs torchvision) or unet (the built-in Unet,
width 32 depth 4, 3x512x512). Prints one JSON line: {"seconds": ..., "stages": {...}, "torch": ...}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (3, 512, 512)


def LRASPP(num_classes: int = 7):  # noqa: N802 - `hostctl inspect --model bench_inspect:LRASPP` builds it
    """torchvision's LR-ASPP MobileNetV3-Large, its "out" as the model's one output."""
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    class TensorOut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

        def forward(self, x):
            return self.inner(x)["out"]

    return TensorOut()


def build(name: str):
    import torch

    torch.manual_seed(0)
    if name == "lraspp":
        return LRASPP().eval()
    from container_payload.models.unet import Unet

    return Unet(num_classes=7, in_channels=3, width=32, depth=4).eval()


def ours(model_name: str, target_name: str) -> dict:
    import torch

    from container_payload.graph.nndct import capture
    from container_payload.inspector import targets
    from container_payload.inspector.deploy import deployable_graph
    from container_payload.inspector.partition import allocate

    model = build(model_name)
    target = targets.by_name(target_name)
    stages = {}
    t0 = time.perf_counter()
    sample = torch.randn((1,) + SIZE)
    with torch.no_grad():
        g = capture(model, sample, relu6_as_relu=True, nndct_names=True, check_forward=False)
    stages["capture"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    nodes = deployable_graph(g)
    stages["deployable graph"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    allocate(nodes, target)
    stages["filters and partition"] = time.perf_counter() - t2
    return {"seconds": time.perf_counter() - t0, "stages": stages, "torch": torch.__version__,
            "cpu_ops": sum(1 for n in nodes if n.device == "cpu")}


def nndct(model_name: str, target_name: str, utf_path: str) -> dict:
    sys.argv.append("--nndct_use_old_inspector")  # nndct reads and strips it at import
    sys.path.insert(0, utf_path)
    sys.setrecursionlimit(100000)
    import torch
    from nndct_shared.compile import DevGraphOptimizer
    from pytorch_nndct.apis import Inspector

    layout_tranform = DevGraphOptimizer.layout_tranform

    def export_order(self):  # as tests/inspect_golden's references: nndct's export order after the layout pass
        layout_tranform(self)
        self.update_node_data()
        self.convert_adaptive_pool_to_pool()

    DevGraphOptimizer.layout_tranform = export_order
    model = build(model_name)
    sample = torch.randn((1,) + SIZE)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        Inspector(target_name).inspect(model, (sample,), device=torch.device("cpu"), output_dir=out)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "stages": {}, "torch": torch.__version__}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    which = sys.argv[1]
    result = ours(*sys.argv[2:4]) if which == "hostctl" else nndct(*sys.argv[2:5])
    print(json.dumps(result), flush=True)
