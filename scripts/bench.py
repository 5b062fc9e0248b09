#!/usr/bin/env python3
"""Benchmarks that print ratios measured side by side in one run (these machines are noisy).

    scripts/bench.py docker    hostctl quantize --runtime docker vs a hand-written `docker run` of the same
                               image and command (the line --print-docker-cmd prints), interleaved
    scripts/bench.py payload   the portable quantizer vs the float forward (scripts/bench_payload.py)
    scripts/bench.py all       both

The docker benchmark needs an engine and an image: --image (default: the stand-in image, built if needed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(command: list[str] | str, first_line_marker: str, *, shell: bool = False,
          env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, seconds until the first line containing the marker) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, executable="/bin/bash" if shell else None)
    first = float("nan")
    assert proc.stdout is not None
    for line in proc.stdout:
        if first != first and first_line_marker in line:
            first = time.perf_counter() - start
    code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"benchmark command failed with exit {code}: {command}")
    return wall, first


def bench_docker(args: argparse.Namespace) -> None:
    from helpers import make_inputs, tiny_unet

    image = args.image or subprocess.run([str(ROOT / "scripts" / "build-stand-in-image.sh")], check=True,
                                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-"))
    env = dict(os.environ, HOSTCTL_CACHE_DIR=str(work / "cache"), COLUMNS="120")
    try:
        inputs = make_inputs(work / "in", tiny_unet(), n_calib=8, n_test=4)
        common = ["--input-dir", str(inputs.dir), "--input-size", "3", "32", "32", "--num-classes", "3",
                  "--model-arg", "width=4", "--model-arg", "depth=2", "--quantizer", "portable", "--image", image,
                  "--pull", "never", "--no-evaluate"]
        hostctl = [sys.executable, "-m", "hostctl", "quantize", "--runtime", "docker", *common]
        hand = subprocess.run(hostctl + ["--output-dir", str(work / "hand"), "--print-docker-cmd"], env=env,
                              check=True, capture_output=True, text=True).stdout.strip()
        # Warm-up: first runs pay for page cache and hostctl's one-off validation of the model.
        timed(hostctl + ["--output-dir", str(work / "warm")], "model ", env=env)
        timed(hand, "model ", shell=True)
        rows: dict[str, list[tuple[float, float]]] = {"hostctl": [], "docker run": []}
        for i in range(args.runs):
            out = work / f"out{i}"
            rows["hostctl"].append(timed(hostctl + ["--output-dir", str(out)], "model ", env=env))
            shutil.rmtree(work / "hand", ignore_errors=True)
            rows["docker run"].append(timed(hand, "model ", shell=True))
        med = {name: (statistics.median(w for w, _ in r), statistics.median(f for _, f in r))
               for name, r in rows.items()}
        print(f"\ndocker benchmark: {args.runs} interleaved runs each, image {image}, tiny Unet, 8 calib + 4 test")
        print(f"{'':12} {'median s':>9} {'min s':>7} {'max s':>7} {'first log line s':>17}")
        for name, r in rows.items():
            walls = [w for w, _ in r]
            print(f"{name:12} {med[name][0]:9.2f} {min(walls):7.2f} {max(walls):7.2f} {med[name][1]:17.2f}")
        ratio = med["hostctl"][0] / med["docker run"][0]
        overhead = med["hostctl"][0] - med["docker run"][0]
        print(f"ratio hostctl / docker run: {ratio:.3f} (target <= 1.10); overhead {overhead:+.2f} s (target <= 0.5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_payload(args: argparse.Namespace) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_payload.py"), *args.payload_args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("docker", "payload", "all"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default=os.environ.get("HOSTCTL_TEST_IMAGE"))
    parser.add_argument("payload_args", nargs="*", help="passed to bench_payload.py (after --)")
    args = parser.parse_args()
    if args.what in ("payload", "all"):
        bench_payload(args)
    if args.what in ("docker", "all"):
        bench_docker(args)


if __name__ == "__main__":
    main()
