#!/usr/bin/env python3
"""One timed workload under this process's thread settings (run by `scripts/bench.py threads`, never alone):
a small Unet (width 16, depth 3) on batches of 8 at 3x96x96: the float forward, the portable calibration (quant_opt
3, bias correction included) and the portable test mode over the same batches. Prints one JSON line of seconds."""

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from container_payload.backends.portable import PortableBackend  # noqa: E402
from container_payload.models.unet import Unet  # noqa: E402


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    torch.manual_seed(0)
    model = Unet(num_classes=7, in_channels=3, width=16, depth=3).eval()
    data = [torch.randn(8, 3, 96, 96) for _ in range(batches)]
    out = {"threads": torch.get_num_threads(), "policy": os.environ.get("OMP_WAIT_POLICY", "")}
    with torch.no_grad():
        model(data[0])  # warm-up: oneDNN's kernels, the allocator
        start = time.perf_counter()
        for b in data:
            model(b)
        out["float"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as d:
        backend = PortableBackend(model, d, (3, 96, 96), quant_opt=3, warn=lambda m: None)
        start = time.perf_counter()
        backend.calibrate(iter(data), count=batches)
        out["calibration"] = time.perf_counter() - start
        q = backend.quantized()
        start = time.perf_counter()
        with torch.no_grad():
            for b in data:
                q(b)
        out["test"] = time.perf_counter() - start
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
