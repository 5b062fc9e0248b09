#!/usr/bin/env python3
"""Benchmark the portable quantizer against the float forward, side by side in one process.

Two models, each on lightly structured images (smooth random fields, like photographs after normalisation) of
3x256x256 in calibration batches of 8, with BatchNorm statistics settled on the data:
  unet       the built-in Unet, width 32, depth 4: few wide layers, where memory traffic and the convs dominate
  mobilenet  MobileNetV3-Large under an LR-ASPP head (scripts/bench_models.py): many small layers, where the
             cost per op shows
For each, over the same batches: portable calibration and the portable test-mode model with quant_opt 3
(nndct's default) and 0, each batch timed right after a float forward of the same batch, so that both see the
same machine load; every phase is divided by the float forwards timed beside it. With --rounds N each batch
keeps its best time over N rounds, on both sides alike. Then calibration + test run again in fresh processes for
two sample counts and print their peak RSS, to show that memory does not grow with the number of samples.
With --breakdown, one more calibration with quant_opt 3 runs with its parts timed as they run (exclusive wall
time of each, against the float forwards timed beside it): bias correction's float reference convs and error
statistics, each tensor's min/max pass, the search among five fix positions (with the rounding it fuses), the
rounding on its own, and the rest (the model's own ops on quantized values, and Python).

    python scripts/bench_payload.py                          # both models, about 6 minutes on 2 cores
    python scripts/bench_payload.py --model unet --batches 4 --no-rss
    python scripts/bench_payload.py --model mobilenet --no-rss --breakdown
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_models import MobileNetV3Seg  # noqa: E402

from container_payload.backends.portable import PortableBackend, engine  # noqa: E402
from container_payload.backends.portable import fixpoint as fxp  # noqa: E402
from container_payload.models.unet import Unet  # noqa: E402
from container_payload.run import keep_freed_memory  # noqa: E402

TARGETS = {"calibration": 2.0, "test mode": 1.2}


def make_batches(n: int, batch_size: int, size: int, seed: int = 0):
    return list(iter_batches(n, batch_size, size, seed))


def iter_batches(n: int, batch_size: int, size: int, seed: int = 0):
    """make_batches' batches made one at a time, as the payload reads them from HDF5: for memory measurements."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        coarse = torch.randn(batch_size, 3, 8, 8, generator=g)
        mid = torch.randn(batch_size, 3, 32, 32, generator=g) * 0.3
        img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        img = img + F.interpolate(mid, size=(size, size), mode="bilinear", align_corners=False)
        img = img + 0.05 * torch.randn(batch_size, 3, size, size, generator=g)
        yield img.contiguous()


def make_model(name: str, batches, width: int = 32, depth: int = 4):
    torch.manual_seed(0)
    model = Unet(num_classes=7, in_channels=3, width=width, depth=depth) if name == "unet" else MobileNetV3Seg(7)
    for m in model.modules():  # settle BatchNorm statistics on the data, as a trained model would have them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for b in batches[:2]:
            model(b[:2])
    return model.eval()


class Clock:
    """Wall time and this process's CPU time (all threads) since start."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def timed(fn):
    c = Clock()
    fn()
    return c.read()


def run_once(args, quant_opt: int, batches, model):
    """Calibration then test mode over batches() (a fresh iterator each call), as run.py runs them."""
    with tempfile.TemporaryDirectory() as d:
        backend = PortableBackend(model, d, (3, args.size, args.size), quant_opt=quant_opt, warn=lambda m: None)
        backend.calibrate(batches(), count=args.batches)  # as run.py announces them
        q = backend.quantized()
        with torch.no_grad():
            for b in batches():
                q(b)


def calibrate_interleaved(args, quant_opt: int, batches, model, d: str, parts=None):
    """Per-batch (wall, cpu) times of the float forward and of calibration, each batch's float forward right
    before its calibration; calibration's one-time work (graph capture before the first batch, quant_info after
    the last) is added to its last batch. With parts (a PartTimer), calibration's parts are timed too. Returns
    the calibrated backend as well."""
    f_cal, cal = [], []

    def feed():
        for b in batches:
            with torch.no_grad():
                f_cal.append(timed(lambda b=b: model(b)))
            clock = Clock()
            yield b
            cal.append(clock.read())  # the backend's work on b happens between the two next() calls

    backend = PortableBackend(model, d, (3, args.size, args.size), quant_opt=quant_opt, warn=lambda m: None)
    with timed_parts(parts) if parts is not None else contextlib.nullcontext():
        total = timed(lambda: backend.calibrate(feed(), count=len(batches)))
    once = tuple(max(0.0, total[i] - sum(c[i] for c in cal) - sum(f[i] for f in f_cal)) for i in (0, 1))
    cal[-1] = (cal[-1][0] + once[0], cal[-1][1] + once[1])
    return f_cal, cal, backend


def run_interleaved(args, quant_opt: int, batches, model):
    """Per-batch (wall, cpu) times: the float forward beside calibration, calibration, the float forward
    beside test mode, test mode."""
    f_test, test = [], []
    with tempfile.TemporaryDirectory() as d:
        f_cal, cal, backend = calibrate_interleaved(args, quant_opt, batches, model, d)
        q = backend.quantized()
        for b in batches:
            with torch.no_grad():
                f_test.append(timed(lambda b=b: model(b)))
            test.append(timed(lambda b=b: q(b)))
    return f_cal, cal, f_test, test


class PartTimer:
    """Exclusive wall time per part: a timed call inside another timed call counts for the inner part only."""

    def __init__(self) -> None:
        self.spent = {}
        self._stack = []  # [part, time spent in timed calls made inside it]

    def wrap(self, part: str, fn):
        def timed_call(*a, **kw):
            self._stack.append([part, 0.0])
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                took = time.perf_counter() - start
                _, inner = self._stack.pop()
                self.spent[part] = self.spent.get(part, 0.0) + took - inner
                if self._stack:
                    self._stack[-1][1] += took
        return timed_call


@contextlib.contextmanager
def timed_parts(timer: PartTimer):
    """Calibration's parts timed as they run (the functions are wrapped where the backend looks them up)."""
    saved = [(fxp, "min_max_"), (fxp, "sse_candidates"), (fxp, "quantize_act_"), (engine, "error_stats"),
             (engine.Calibrator, "_param_op")]
    originals = [getattr(owner, name) for owner, name in saved]
    param_op = engine.Calibrator._param_op

    def reference_or_quantized(self, node, x, w, b):
        ref = node.name in self.float_params and w is self.float_params[node.name][0] and \
            self.qweight.get(node.name) is not w
        call = reference_op if ref else param_op
        return call(self, node, x, w, b)

    reference_op = timer.wrap("reference convs (bias correction)", param_op)
    try:
        fxp.min_max_ = timer.wrap("min/max pass", fxp.min_max_)
        fxp.sse_candidates = timer.wrap("fix-position search", fxp.sse_candidates)
        fxp.quantize_act_ = timer.wrap("rounding", fxp.quantize_act_)
        engine.error_stats = timer.wrap("error statistics (bias correction)", engine.error_stats)
        engine.Calibrator._param_op = reference_or_quantized
        yield
    finally:
        for (owner, name), fn in zip(saved, originals, strict=True):
            setattr(owner, name, fn)


def rss_child(args) -> None:
    # batches are made as they are used, not held: the payload streams them from HDF5, and holding them here
    # would add the benchmark's own data (8 MB a batch of 3x256x256) to the peak
    def batches():
        return iter_batches(args.batches, args.batch_size, args.size)

    model = make_model(args.model, list(iter_batches(2, args.batch_size, args.size)))
    run_once(args, 3, batches, model)
    print(json.dumps({"maxrss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec. Linux's VmHWM, which exec resets: getrusage's
    ru_maxrss keeps the high-water mark of the image before exec, here the benchmark's own parent at fork, which
    made every model report the parent's 1.3-1.7 GB whatever it used itself."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(args, name: str) -> list:
    """Prints one model's table; returns its (phase, ratio, target) rows."""
    batches = make_batches(args.batches, args.batch_size, args.size)
    model = make_model(name, batches)
    with torch.no_grad():
        model(batches[0])  # warm-up
    best = {}

    def keep(key, values):
        # per batch, the (wall, cpu) pair of the round with the least wall time
        best[key] = [min(a, b) for a, b in zip(best[key], values, strict=True)] if key in best else list(values)

    for _ in range(args.rounds):
        for qo in (3, 0):
            f_cal, cal, f_test, test = run_interleaved(args, qo, batches, model)
            keep(("calibration", qo, "float"), f_cal)
            keep(("calibration", qo, "quant"), cal)
            keep(("test mode", qo, "float"), f_test)
            keep(("test mode", qo, "quant"), test)
    parts = None
    if args.breakdown:
        timer = PartTimer()
        with tempfile.TemporaryDirectory() as d:
            f_cal, cal, _ = calibrate_interleaved(args, 3, batches, model, d, parts=timer)
        fwall, wall = sum(w for w, _ in f_cal), sum(w for w, _ in cal)
        parts = [(k, v / fwall) for k, v in sorted(timer.spent.items(), key=lambda kv: -kv[1])]
        parts.append(("the rest: the ops themselves, Python", (wall - sum(timer.spent.values())) / fwall))
        parts.insert(0, ("calibration, quant_opt=3, timed", wall / fwall))
    samples = args.batches * args.batch_size
    print("\n{}: {} samples of 3x{}x{} in {} batches of {}, torch {}, {} threads, best of {}, {} malloc, load average "
          "{}".format(
        "Unet width 32 depth 4" if name == "unet" else "MobileNetV3-Large LR-ASPP", samples, args.size, args.size,
        args.batches, args.batch_size, torch.__version__, torch.get_num_threads(), args.rounds, args.malloc,
        " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "n/a"))
    print("{:<28} {:>9} {:>9} {:>8} {:>8} {:>8}".format("phase", "wall s", "float s", "x float", "target",
                                                       "CPU x"))
    rows = []
    for qo in (3, 0):
        for phase in ("calibration", "test mode"):
            quant, flt = best[(phase, qo, "quant")], best[(phase, qo, "float")]
            wall, fwall = sum(w for w, _ in quant), sum(w for w, _ in flt)
            cpu, fcpu = sum(c for _, c in quant), sum(c for _, c in flt)
            label = f"{phase}, quant_opt={qo}"
            target = TARGETS[phase]
            rows.append((name, label, wall / fwall, target))
            print("{:<28} {:>9.2f} {:>9.2f} {:>8.2f} {:>8} {:>8.2f}".format(
                label, wall, fwall, wall / fwall, f"<= {target:.1f}" if qo == 3 else "", cpu / fcpu))
    if parts:
        print("calibration's parts (exclusive wall time, x float)")
        for k, (label, ratio) in enumerate(parts):
            print("  {:<40} {:>6.2f}".format(label if k == 0 else "  " + label, ratio))
    if not args.no_rss:
        print("{:<28} {:>9}".format("peak RSS, fresh process", "MB"))
        for n in (max(1, args.batches // 2), args.batches):
            cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", "--malloc", args.malloc, "--model", name,
                   "--batches", str(n),
                   "--batch-size", str(args.batch_size), "--size", str(args.size)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            mb = json.loads(out.strip().splitlines()[-1])["maxrss_mb"]
            print("{:<28} {:>9.0f}".format(f"  {n * args.batch_size} samples", mb))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 160 calibration samples: the tutorial asks for 100 to 1000. Bias correction (quant_opt > 0) re-runs each
    # conv in float until its per-layer stop test fires, usually within 6-12 batches, so a very small set
    # overstates its share (24 samples: about 3x float instead of 2x).
    p.add_argument("--model", choices=("unet", "mobilenet", "both"), default="both")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=1, help="repeat the timings, keep each batch's best")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--breakdown", action="store_true",
                   help="also time calibration's parts (quant_opt 3) as they run")
    p.add_argument("--threads", type=int, help="torch threads, set once at start (default: torch's own)")
    p.add_argument("--malloc", choices=("payload", "glibc"), default="payload",
                   help="payload: glibc's malloc keeps freed memory, as the payload sets it (default); glibc: its "
                        "own defaults, where large tensors are mapped and page-faulted in afresh every batch")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "payload":
        keep_freed_memory()  # as run.execute sets it: the float forward beside the quantizer gets the same
    if args.rss_child:
        rss_child(args)
        return
    rows = []
    for name in (("unet", "mobilenet") if args.model == "both" else (args.model,)):
        rows += bench_model(args, name)
    print("\nsummary (quant_opt=3, nndct's default):")
    for name, label, ratio, target in rows:
        if label.endswith("=3"):
            print("  {:<10} {:<26} {:5.2f}x float  target <= {:.1f}x  {}".format(
                name, label, ratio, target, "met" if ratio <= target else "NOT MET"))


if __name__ == "__main__":
    main()
