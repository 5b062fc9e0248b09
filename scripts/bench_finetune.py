#!/usr/bin/env python3
"""scripts/bench.py finetune: the portable fast finetune against vai_q_pytorch's own, side by side in one run.

The same inputs go to `hostctl quantize --runtime local --fast-finetune` twice, under an interpreter with
pytorch_nndct (--python): once with --quantizer vai (nndct's AdaQuant, `quantizer.fast_finetune(...)`), once with
--quantizer portable. The model is MobileSeg (container_payload/models/mobileseg.py, the model of issue 21) with
the weights scripts/train_mobileseg.py made (tests/data/mobileseg_state_dict.pt, or random weights when absent),
on --samples synthetic images of --size (hostctl/synthetic.py, the demo's generator). Printed: the finetune
stage's seconds (run.json payload.timings.finetune) and the whole run's, the ratio, and each run's peak memory
(the largest resident set of its processes, getrusage of the waited children), with the mIoU of both runs when
the samples have labels.

    python3 scripts/bench.py finetune --python /root/nndct-venv/bin/python --samples 200 --size 3 256 256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEIGHTS = ROOT / "tests" / "data" / "mobileseg_state_dict.pt"
MODEL = "container_payload.models.mobileseg:MobileSeg"


def make_inputs(directory: Path, samples: int, test: int, size: tuple[int, int, int], seed: int = 0) -> str:
    """quantization_samples.h5 (calibration, test, labels) from the synthetic generator, and the state_dict."""
    import h5py
    import numpy as np
    import torch

    from container_payload.models.mobileseg import MobileSeg
    from hostctl.synthetic import generate_arrays

    directory.mkdir(parents=True, exist_ok=True)
    model = MobileSeg()
    origin = "random weights (seed 0)"
    if WEIGHTS.exists():
        model.load_state_dict(torch.load(WEIGHTS))
        origin = str(WEIGHTS.relative_to(ROOT))
    else:
        torch.manual_seed(0)
    torch.save(model.state_dict(), directory / "state_dict.pt")
    c, h, w = size
    with h5py.File(directory / "quantization_samples.h5", "w", track_order=True) as h5:
        groups = {name: h5.create_group(name, track_order=True) for name in ("calibration", "test", "labels")}
        for i, (pixels, mask) in enumerate(generate_arrays(samples + test, h, w, seed)):
            name = f"s{i:04d}"
            image = pixels.transpose(2, 0, 1) / np.float32(255.0)  # hostctl prepare's default ("unit")
            if i < samples:
                groups["calibration"].create_dataset(name, data=image.astype(np.float32))
            else:
                groups["test"].create_dataset(name, data=image.astype(np.float32))
                groups["labels"].create_dataset(name, data=mask.astype(np.uint8))
    return origin


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, subprocess.CompletedProcess[str]]:
    """Wall seconds and peak RSS (MB) of cmd and its descendants, measured in a fresh process of its own."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, text=True, capture_output=True)
    wall, rss_kb, rc = proc.stdout.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) // 1024, subprocess.CompletedProcess(cmd, int(rc), proc.stdout, proc.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="an interpreter with pytorch_nndct")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--test-samples", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=[3, 256, 256], metavar=("C", "H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="passed to both runs (default: hostctl's plan)")
    parser.add_argument("--only", choices=("portable", "vai"), help="run one side only")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-finetune-"))
    try:
        origin = make_inputs(work / "in", args.samples, args.test_samples, tuple(args.size))
        env = dict(os.environ, HOSTCTL_CACHE_DIR=str(work / "cache"), COLUMNS="120", PYTHONPATH=str(ROOT))
        common = [sys.executable, "-m", "hostctl", "quantize", "--runtime", "local", "--python", args.python,
                  "--input-dir", str(work / "in"), "--model", MODEL, "--input-size", *map(str, args.size),
                  "--calib-batch-size", str(args.batch_size), "--export", "none", "--analyze-samples", "0",
                  "--fast-finetune"]
        if args.threads:
            common += ["--threads", str(args.threads)]
        rows = {}
        for quantizer in ("vai", "portable"):
            if args.only and quantizer != args.only:
                continue
            out = work / quantizer
            wall, rss, proc = run(common + ["--quantizer", quantizer, "--output-dir", str(out)], env)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                print(f"{quantizer}: exit {proc.returncode}", file=sys.stderr)
                return 1
            manifest = json.loads((out / "run.json").read_text())
            metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
            rows[quantizer] = (manifest["payload"]["timings"].get("finetune", float("nan")), wall, rss,
                               manifest["payload"].get("finetune") or {}, metrics)
        load = " ".join(open("/proc/loadavg").read().split()[:3])
        print(f"\nfast finetune: MobileSeg ({origin}), {args.samples} calibration samples of "
              f"{'x'.join(map(str, args.size))} in batches of {args.batch_size}, {args.test_samples} test samples, "
              f"--python {args.python}, load average {load}, {time.strftime('%Y-%m-%d %H:%M')}")
        print(f"{'quantizer':10} {'finetune s':>11} {'whole run s':>12} {'peak RSS MB':>12} {'mIoU f/q':>16}")
        for quantizer, (ft, wall, rss, _, metrics) in rows.items():
            shown = "-"
            if "float" in metrics and "quantized" in metrics:
                shown = f"{metrics['float']['miou']:.4f}/{metrics['quantized']['miou']:.4f}"
            print(f"{quantizer:10} {ft:11.1f} {wall:12.1f} {rss:12d} {shown:>16}")
        if len(rows) == 2:
            print(f"finetune vai/portable: {rows['vai'][0] / rows['portable'][0]:.1f}x (target >= 10)")
        if "portable" in rows:
            tuned = rows["portable"][3]
            print(f"portable: net loss {tuned.get('initial_loss')} -> {tuned.get('final_loss')}, disk cache up to "
                  f"{tuned.get('cache_needs_mb')} MB, {len(tuned.get('layers', []))} layers")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
