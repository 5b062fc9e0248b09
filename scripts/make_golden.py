#!/usr/bin/env python3
"""Regenerate the golden references (tests/golden/refs/<arch>-q<opt>.json) with the real vai_q_pytorch.

    scripts/make_golden.py --nndct-python /path/to/venv/bin/python [--only NAME ...] [--quant-opt 0 3]

The Python named by --nndct-python must import pytorch_nndct, torchvision, timm and segmentation_models_pytorch
(see the README's "Golden references"). For each architecture of tests/golden/zoo.py and each quant_opt, a fresh
worker process under that Python builds the model from the seed, calibrates with nndct in batches of
zoo.CALIB_BATCH, exports quant_info.json, runs test mode over the test samples and writes the reference: nndct's
quant_info.json verbatim, argmax maps and the first logits of the quantized and float outputs, versions, seed.
A fresh process per reference because nndct reads --nndct_quant_opt from sys.argv once, at import.

Each reference records the float arithmetic it was made with under "arithmetic" (tests/golden/arithmetic.py:
ATen's CPU capability, oneDNN's ISA, the thread count, the BLAS library): with bias correction, nndct's results
are exact only on the same float kernels, and the golden tier runs its check capped to them. To make references
for another ISA, cap it in the environment (e.g. `ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX`). Where a
reference existed, the script says what regenerating it changed: nothing but "arithmetic" and "seconds", or
which fix positions and outputs moved, and by how much the float model itself moved (the cause).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
REFS = GOLDEN / "refs"
FORMAT = 2  # 2: "arithmetic"
# What may change between two runs of the same reference without its results changing.
INCIDENTAL = ("seconds", "arithmetic", "format")


def main() -> int:
    sys.path.insert(0, str(GOLDEN))
    import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nndct-python", required=True, help="interpreter that imports pytorch_nndct")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(zoo.ZOO), help="these architectures")
    parser.add_argument("--quant-opt", nargs="+", type=int, default=[0, 3], help="nndct quant_opt levels")
    parser.add_argument("--out", type=Path, default=REFS, help="directory for the references")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for arch in args.only or list(zoo.ZOO):
        for q in args.quant_opt:
            dest = args.out / f"{arch}-q{q}.json"
            with tempfile.TemporaryDirectory(prefix=f"golden-{arch}-q{q}-") as work:
                log = Path(work) / "nndct.log"
                start = time.monotonic()
                with open(log, "w") as f:
                    rc = subprocess.call(
                        [args.nndct_python, str(Path(__file__).resolve()), "--worker", arch, str(q),
                         str(Path(work) / "ref.json"), str(args.threads)],
                        cwd=work, stdout=f, stderr=subprocess.STDOUT,
                        env={**os.environ, "MAX_JOBS": "2", "PYTHONDONTWRITEBYTECODE": "1"})
                took = time.monotonic() - start
                if rc != 0 or not (Path(work) / "ref.json").is_file():
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    print(f"{arch} q{q}: FAILED (exit {rc}) after {took:.0f}s:\n    " + "\n    ".join(tail),
                          flush=True)
                    failed.append(f"{arch}-q{q}")
                    continue
                before = json.loads(dest.read_text()) if dest.is_file() else None
                os.replace(Path(work) / "ref.json", dest)
            ref = json.loads(dest.read_text())
            info = ref["quant_info"]
            print(f"{arch} q{q}: {len(info['param'])} params, {len(info['output'])} outputs, "
                  f"nndct calib {ref['seconds']['nndct_calib']:.1f}s test {ref['seconds']['nndct_test']:.1f}s "
                  f"(float {ref['seconds']['float']:.2f}s), {dest.stat().st_size // 1024} KB -> "
                  f"{dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}", flush=True)
            if before is not None:
                print(f"    {changes(before, ref)}", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def changes(before: dict, after: dict) -> str:
    """What regenerating a reference changed, in one line: its results, or only its incidental fields."""
    import arithmetic

    moved = sorted(k for k in set(before) | set(after) if k not in INCIDENTAL and before.get(k) != after.get(k))
    old, new = before.get("arithmetic"), after.get("arithmetic")
    where = (f" ({arithmetic.describe(old)} -> {arithmetic.describe(new)})" if old and old != new else
             " (before: no arithmetic recorded)" if not old else "")
    if not moved:
        return f"unchanged but for {', '.join(k for k in INCIDENTAL if before.get(k) != after.get(k))}{where}"
    parts = []
    for section in ("param", "output", "input"):
        a, b = before.get("quant_info", {}).get(section, {}), after["quant_info"].get(section, {})
        n = sum(1 for k in set(a) | set(b) if a.get(k) != b.get(k))
        if n:
            parts.append(f"{n} {section} fix position{'s' if n != 1 else ''}")
    for side in ("float", "quantized"):
        if before.get(side) != after.get(side):
            diff = max(abs(x - y) for x, y in zip(_flat(before[side]["logits"]), _flat(after[side]["logits"]),
                                                  strict=False))
            agree = _argmax_agreement(before[side]["argmax"], after[side]["argmax"])
            parts.append(f"{side} outputs (argmax agreement {agree:.4f}, first logits max diff {diff:.3g})")
    parts += [k for k in moved if k not in ("quant_info", "float", "quantized")]
    float_moved = before.get("float") != after.get("float")
    results_moved = any(before.get(k) != after.get(k) for k in ("quant_info", "quantized"))
    if not results_moved:
        why = "nndct's fix positions and quantized outputs are the same; only the float model's last bits moved"
    elif float_moved:
        why = "the float model itself computes differently with these kernels" + (
            ", and bias correction carries that into the biases" if after.get("quant_opt") else "")
    else:
        why = "the float model is identical: look at nndct's log"
    return f"CHANGED{where}: {', '.join(parts) or ', '.join(moved)}; {why}"


def _argmax_agreement(a: str, b: str) -> float:
    import zoo

    x, y = zoo.unpack_argmax(a), zoo.unpack_argmax(b)
    return float((x == y).mean()) if x.shape == y.shape else 0.0


def _flat(values: list) -> list:
    return [x for v in values for x in _flat(v)] if isinstance(values, list) else [values]


def worker(arch: str, quant_opt: int, dest: str, threads: int) -> None:
    """Runs under the nndct Python, in a scratch directory."""
    sys.argv.append(f"--nndct_quant_opt={quant_opt}")  # nndct reads and strips it at import
    sys.path.insert(0, str(GOLDEN))
    import arithmetic
    import numpy as np
    import pytorch_nndct
    import torch
    import zoo
    from pytorch_nndct.apis import torch_quantizer

    torch.set_num_threads(threads)
    arith = arithmetic.current(torch)
    cpu = torch.device("cpu")
    calib, test = zoo.inputs(arch)
    test_x = torch.from_numpy(test)
    batches = zoo.calib_batches(calib)

    model = zoo.build(arch)
    start = time.monotonic()
    with torch.no_grad():
        for b in batches:
            model(b)
        float_out = model(test_x)
    float_s = time.monotonic() - start

    start = time.monotonic()
    quantizer = torch_quantizer("calib", model, (batches[0],), output_dir="quantize_result", device=cpu)
    with torch.no_grad():
        for b in batches:
            quantizer.quant_model(b)
    quantizer.export_quant_config()
    calib_s = time.monotonic() - start
    with open("quantize_result/quant_info.json") as f:
        quant_info = json.load(f)

    model = zoo.build(arch)  # a fresh copy: nndct may have changed the first one in place
    start = time.monotonic()
    quantizer = torch_quantizer("test", model, (test_x,), output_dir="quantize_result", device=cpu)
    with torch.no_grad():
        quant_out = quantizer.quant_model(test_x)
    test_s = time.monotonic() - start
    if not isinstance(quant_out, torch.Tensor):
        raise SystemExit(f"{arch}: the quantized model returned {type(quant_out).__name__}, not a tensor")

    versions = {"torch": torch.__version__, "pytorch_nndct": pytorch_nndct.__version__, "numpy": np.__version__}
    for mod in ("torchvision", "timm", "segmentation_models_pytorch"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    ref = {
        "format": FORMAT,
        "arch": arch,
        "quant_opt": quant_opt,
        "seed": zoo.SEED,
        "input_size": list(zoo.INPUT_SIZE),
        "calib_samples": len(calib),
        "calib_batch": zoo.CALIB_BATCH,
        "test_samples": len(test),
        "versions": versions,
        "arithmetic": arith,
        "seconds": {"float": round(float_s, 3), "nndct_calib": round(calib_s, 2), "nndct_test": round(test_s, 2)},
        "quant_info": quant_info,
        "quantized": {"argmax": zoo.pack_argmax(quant_out), "logits": zoo.first_logits(quant_out)},
        "float": {"argmax": zoo.pack_argmax(float_out), "logits": zoo.first_logits(float_out)},
    }
    with open(dest, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, arch, q, dest, threads = sys.argv[:6]
        del sys.argv[1:]
        worker(arch, int(q), dest, int(threads))
    else:
        sys.exit(main())
