"""Compare the portable backend with the golden references of the real vai_q_pytorch.

    python tests/golden/check.py [--only NAME ...] [--refs DIR]

Runs under the golden Python (torch, torchvision, timm, segmentation_models_pytorch; no nndct needed; see
scripts/golden-env.sh). For every reference it rebuilds the model and inputs from the seed, calibrates the
portable backend with the same batches, runs the quantized model on the test samples and prints one JSON line:

  params / inputs / activations   [matched, total]: nndct's entries whose name the portable quant_info.json has
                                  with the same fix position (inputs: the network input entries)
  activations_named               [named, total]: nndct's activation entries present by name at all
  extra, extra_names              how many portable entries nndct does not have, and the first few
  argmax                          share of pixels (samples) where the quantized argmax equals nndct's
  logits_max_abs                  largest difference from nndct's first quantized logits
  float_argmax, float_logits_max_abs   the same for the float model: proves both sides built the same model
  error                           what the portable backend raised, if it did
  differences                     with --diff: [name, nndct's fix position, portable's or null] per mismatch
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[1]
REFS = GOLDEN / "refs"
sys.path[:0] = [str(ROOT), str(GOLDEN)]

import zoo  # noqa: E402 - needs the path above

from container_payload.backends.portable import PortableBackend  # noqa: E402 - needs the path above


def _is_input(name: str) -> bool:
    return name.split("::", 1)[-1].startswith("nndct_input_")


def _matched(ref: dict, ours: dict, keys: list) -> list:
    return [sum(1 for k in keys if k in ours and ours[k] == ref[k]), len(keys)]


def compare_quant_info(ref: dict, ours: dict) -> dict:
    ref_out, our_out = ref["output"], ours.get("output", {})
    inputs = [k for k in ref_out if _is_input(k)]
    acts = [k for k in ref_out if not _is_input(k)]
    our_all = {**ours.get("param", {}), **our_out, **ours.get("input", {})}
    ref_all = {**ref["param"], **ref_out, **ref.get("input", {})}
    # the network input appears as an output entry (nndct_input_0); the "input" section is usually empty
    ref_in = {**{k: ref_out[k] for k in inputs}, **ref.get("input", {})}
    our_in = {**our_out, **ours.get("input", {})}
    return {
        "params": _matched(ref["param"], ours.get("param", {}), list(ref["param"])),
        "inputs": _matched(ref_in, our_in, list(ref_in)),
        "activations": _matched(ref_out, our_out, acts),
        "activations_named": [sum(1 for k in acts if k in our_out), len(acts)],
        "extra": len([k for k in our_all if k not in ref_all]),
        "extra_names": sorted(k for k in our_all if k not in ref_all)[:5],
    }


def differences(ref: dict, ours: dict) -> list:
    """[name, nndct's, portable's] for every nndct entry the portable quant_info.json lacks or disagrees on."""
    out = []
    for section in ("param", "output", "input"):
        theirs, mine = ref.get(section, {}), ours.get(section, {})
        out += [[k, v[0][1], mine[k][0][1] if k in mine else None] for k, v in theirs.items() if mine.get(k) != v]
    return out


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def _max_abs(a: list, b: list) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def check(path: Path, diff: bool = False) -> dict:
    ref = json.loads(path.read_text())
    arch, q = ref["arch"], ref["quant_opt"]
    line = {"ref": path.stem, "arch": arch, "quant_opt": q}
    if ref["seed"] != zoo.SEED or tuple(ref["input_size"]) != zoo.INPUT_SIZE:
        line["error"] = "the reference was made with another seed or input size than tests/golden/zoo.py's"
        return line
    start = time.monotonic()
    calib, test = zoo.inputs(arch)
    test_x = torch.from_numpy(test)
    model = zoo.build(arch)
    with torch.no_grad():
        float_out = model(test_x)
    line["float_argmax"] = _agreement(zoo.unpack_argmax(zoo.pack_argmax(float_out)),
                                      zoo.unpack_argmax(ref["float"]["argmax"]))
    line["float_logits_max_abs"] = _max_abs(zoo.first_logits(float_out), ref["float"]["logits"])
    warnings = []
    with tempfile.TemporaryDirectory(prefix="golden-") as run_dir:
        try:
            backend = PortableBackend(model, run_dir, zoo.INPUT_SIZE, quant_opt=q, warn=warnings.append)
            batches = zoo.calib_batches(calib)
            backend.calibrate(batches, count=len(batches))  # as run.py announces them
            ours = json.loads((Path(run_dir) / "quant_info.json").read_text())
            line.update(compare_quant_info(ref["quant_info"], ours))
            if diff:
                line["differences"] = differences(ref["quant_info"], ours)
            with torch.no_grad():
                quant_out = backend.quantized()(test_x)
            line["argmax"] = _agreement(zoo.unpack_argmax(zoo.pack_argmax(quant_out)),
                                        zoo.unpack_argmax(ref["quantized"]["argmax"]))
            line["logits_max_abs"] = _max_abs(zoo.first_logits(quant_out), ref["quantized"]["logits"])
        except Exception as exc:  # noqa: BLE001 - any failure of the backend is a finding to report, not a crash
            last = traceback.extract_tb(exc.__traceback__)[-1]
            message = str(exc).splitlines()[0] if str(exc) else ""
            if len(message) > 240:
                message = message[:240] + "..."
            line["error"] = f"{type(exc).__name__}: {message} (at {Path(last.filename).name}:{last.lineno})"
    line["warnings"] = len(warnings)
    line["seconds"] = round(time.monotonic() - start, 2)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, default=REFS)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="architectures (default: every reference)")
    parser.add_argument("--diff", action="store_true",
                        help="add every differing fix position as [name, nndct, portable] to each line")
    args = parser.parse_args()
    paths = sorted(args.refs.glob("*.json"))
    if args.only:
        paths = [p for p in paths if p.stem.rsplit("-q", 1)[0] in args.only]
    if not paths:
        print(f"no references under {args.refs}", file=sys.stderr)
        return 1
    for path in paths:
        print(json.dumps(check(path, args.diff)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
