"""Compare the portable backend with the golden references of the real vai_q_pytorch.

    python tests/golden/check.py [--only NAME ...] [--refs DIR] [--jobs N] [--diff]

Runs under the golden Python (torch, torchvision, timm, segmentation_models_pytorch; no nndct needed; see
scripts/golden-env.sh). References are exact on the float kernels they were made with (tests/golden/
arithmetic.py): each records them under "arithmetic", and check.py runs each group of references in worker
processes capped to that arithmetic (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, the thread count), whatever the
machine would pick by itself. For every reference a worker rebuilds the model and inputs from the seed,
calibrates the portable backend with the same batches, runs the quantized model on the test samples and prints
one JSON line:

  params / inputs / activations   [matched, total]: nndct's entries whose name the portable quant_info.json has
                                  with the same fix position (inputs: the network input entries)
  activations_named               [named, total]: nndct's activation entries present by name at all
  extra, extra_names              how many portable entries nndct does not have, and the first few
  argmax                          share of pixels (samples) where the quantized argmax equals nndct's
  logits_max_abs                  largest difference from nndct's first quantized logits
  float_argmax, float_logits_max_abs   the same for the float model: proves both sides built the same model
  arithmetic                      the arithmetic the worker computed with (arithmetic.current)
  error                           what the portable backend raised, if it did
  unavailable                     why this machine cannot compute with the reference's arithmetic (no figures)
  differences                     with --diff: [name, nndct's fix position, portable's or null] per mismatch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[1]
REFS = GOLDEN / "refs"
sys.path[:0] = [str(ROOT), str(GOLDEN)]

import arithmetic  # noqa: E402 - needs the path above


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


def _agreement(a, b) -> float:  # numpy arrays
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def _max_abs(a: list, b: list) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def check(path: Path, diff: bool = False) -> dict:
    # Imported here: the parent process only groups references and starts workers under their caps.
    import torch
    import zoo

    from container_payload.backends.portable import PortableBackend

    ref = json.loads(path.read_text())
    arch, q = ref["arch"], ref["quant_opt"]
    line = {"ref": path.stem, "arch": arch, "quant_opt": q}
    if ref["seed"] != zoo.SEED or tuple(ref["input_size"]) != zoo.INPUT_SIZE:
        line["error"] = "the reference was made with another seed or input size than tests/golden/zoo.py's"
        return line
    torch.set_num_threads(ref["arithmetic"]["threads"])
    line["arithmetic"] = arithmetic.current(torch)
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
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes at once (default: the CPU count; each uses the recorded threads)")
    parser.add_argument("--worker", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        for path in args.worker:
            print(json.dumps(check(path, args.diff)), flush=True)
        return 0
    paths = sorted(args.refs.glob("*.json"))
    if args.only:
        paths = [p for p in paths if p.stem.rsplit("-q", 1)[0] in args.only]
    if not paths:
        print(f"no references under {args.refs}", file=sys.stderr)
        return 1
    groups: dict[tuple, list[Path]] = {}
    records: dict[tuple, dict] = {}
    for path in paths:
        record = json.loads(path.read_text()).get("arithmetic")
        if not record:
            print(json.dumps({"ref": path.stem, "error": "the reference records no arithmetic; regenerate it "
                              "with scripts/make_golden.py"}), flush=True)
            continue
        records[arithmetic.key(record)] = record
        groups.setdefault(arithmetic.key(record), []).append(path)
    failed = 0
    for k, group in groups.items():
        lacks = arithmetic.cpu_lacks(records[k])
        if lacks:
            for path in group:
                print(json.dumps({"ref": path.stem, "unavailable": lacks}), flush=True)
            continue
        failed += _run_workers(group, records[k], args)
    return 1 if failed else 0


def _run_workers(paths: list[Path], record: dict, args: argparse.Namespace) -> int:
    """Check paths in up to --jobs workers (the CPU count over the recorded threads), each under record's caps."""
    jobs = max(1, min(len(paths), args.jobs // max(1, record["threads"])))
    shards = [paths[i::jobs] for i in range(jobs)]
    env = {**os.environ, **arithmetic.caps_env(record)}
    extra = ["--diff"] if args.diff else []
    with tempfile.TemporaryDirectory(prefix="golden-check-") as tmp:
        outs = [open(Path(tmp) / f"{i}.out", "w+") for i in range(jobs)]
        try:
            procs = [subprocess.Popen([sys.executable, __file__, *extra, "--worker", *map(str, shard)],
                                      env=env, stdout=out) for shard, out in zip(shards, outs, strict=True)]
            codes = [proc.wait() for proc in procs]
            for out in outs:
                out.seek(0)
                sys.stdout.write(out.read())
            sys.stdout.flush()
        finally:
            for out in outs:
                out.close()
    for code in codes:
        if code != 0:
            print(f"check.py: a worker under {arithmetic.describe(record)} exited {code}", file=sys.stderr)
    return sum(1 for code in codes if code != 0)


if __name__ == "__main__":
    sys.exit(main())
