#!/usr/bin/env python3
"""Benchmarks that print ratios measured side by side in one run (these machines are noisy).

    scripts/bench.py docker    hostctl quantize --runtime docker vs a hand-written `docker run` of the same
                               image and command (the line --print-docker-cmd prints), interleaved
    scripts/bench.py payload   the portable quantizer vs the float forward (scripts/bench_payload.py: Unet and
                               MobileNetV3), then a whole `hostctl quantize --runtime local --quantizer portable`
                               vs a plain float forward of the same batches in a fresh process
    scripts/bench.py run       that whole-run comparison alone
    scripts/bench.py hybrid    hostctl quantize --quantizer vai vs --quantizer hybrid, same inputs, --runtime local
                               (--python, default the nndct venv) or --runtime docker (--image), --hybrid-runs
                               interleaved pairs, --neighbour: whole-run and per-stage medians and ratios, and
                               whether quant_info.json and the quantized predictions are identical
    scripts/bench.py inspect   hostctl's inspection vs vai_q_pytorch's rule-based Inspector on LR-ASPP
                               MobileNetV3 3x512x512, both timed in-process under --python (default the nndct
                               venv; torch 1.13 for both), interleaved in fresh processes, with hostctl's stages;
                               then the whole `hostctl inspect` command under this interpreter
    scripts/bench.py finetune  the portable fast finetune vs vai_q_pytorch's on MobileSeg, same inputs, under --python
                               (scripts/bench_finetune.py: finetune seconds, ratio, peak memory, mIoU)
    scripts/bench.py threads   the payload's thread policies (1 thread; N threads spinning, torch's default; N
                               passive; N with a short spin; hostctl's plan) on a small Unet's float forward,
                               portable calibration and test mode, with and without a CPU-bound neighbour,
                               interleaved in fresh processes (scripts/bench_threads.py)
    scripts/bench.py remote    a whole hostctl quantize --runtime docker over ssh:// (an sshd on loopback in front
                               of the same engine, tests/ssh/sshd.py) vs the same run on the local socket,
                               interleaved: re-run (inputs kept on the engine), first run (new inputs) and
                               copying every run; then copy_in / copy_out of one --remote-mb file over ssh against
                               `docker cp` of it through the same ssh
    scripts/bench.py all       docker and payload

The docker benchmark needs an engine and an image: --image (default: the stand-in image, built if needed).
The hybrid benchmark needs an interpreter where pytorch_nndct imports; e.g.
    scripts/bench.py hybrid --samples 200 --size 3 128 128
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT))


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


def bench_remote(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "ssh"))
    from helpers import make_inputs, tiny_unet
    from sshd import SshServer

    image = args.image or subprocess.run([str(ROOT / "scripts" / "build-stand-in-image.sh")], check=True,
                                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-remote-"))
    engine = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    server = SshServer(work / "sshd", engine if engine.startswith("unix://") else None)
    server.start()
    before = _kept_volumes()
    env = dict(os.environ, HOSTCTL_CACHE_DIR=str(work / "cache"), COLUMNS="120")
    remote_env = dict(env, **server.client_env())
    try:
        inputs = make_inputs(work / "in", tiny_unet(), n_calib=args.remote_calib, n_test=8, size=(3, 128, 128))
        command = [sys.executable, "-m", "hostctl", "quantize", "--runtime", "docker", "--input-dir", str(inputs.dir),
                   "--input-size", "3", "128", "128", "--num-classes", "3", "--model-arg", "width=4",
                   "--model-arg", "depth=2", "--quantizer", "portable", "--image", image, "--pull", "never",
                   "--no-evaluate"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        timed(command + ["--output-dir", str(work / "warm")], "model ", env=remote_env)
        # ssh:// as users re-run it (the inputs kept on the engine by the first run); a first run (new inputs each
        # round: one small file differs, so they fill a volume of their own); and copying every run (no cache)
        fresh = work / "fresh"
        shutil.copytree(inputs.dir, fresh)
        first_command = command.copy()
        first_command[first_command.index("--input-dir") + 1] = str(fresh)
        copying_env = dict(remote_env, HOSTCTL_INPUT_CACHE="0")
        conditions = (("local socket", env, command), ("ssh://", remote_env, command),
                      ("ssh:// first run", remote_env, first_command), ("ssh:// copying", copying_env, command))
        rows: dict[str, list[float]] = {name: [] for name, _, _ in conditions}
        plans: dict[str, list[str]] = {name: [] for name, _, _ in conditions}
        for i in range(args.runs):
            (fresh / "round.txt").write_text(f"round {i}\n")
            for name, run_env, run_command in conditions:
                out = work / f"{name.replace(' ', '-').replace(':', '').replace('/', '')}{i}"
                rows[name].append(timed(run_command + ["--output-dir", str(out)], "model ", env=run_env)[0])
                threads = json.loads((out / "run.json").read_text())["runtime"]["threads"]
                plans[name].append(f"{threads['threads']}{threads['wait_policy'][0]}")
            _remove_input_volumes(fresh)
        med = {name: statistics.median(r) for name, r in rows.items()}
        size_mb = sum(p.stat().st_size for p in inputs.dir.iterdir()) / 1e6
        print(f"\nremote benchmark: {args.runs} interleaved runs each, image {image}, tiny Unet 3x128x128, "
              f"{args.remote_calib} calib + 8 test ({size_mb:.0f} MB of inputs), "
              f"{f'--threads {args.threads}' if args.threads else 'the threads each run planned'}")
        for name, r in rows.items():
            print(f"{name:16} median {med[name]:6.2f} s   min {min(r):6.2f}   max {max(r):6.2f}   "
                  f"threads (A: spinning, P: passive) {' '.join(plans[name])}")
        remote = [name for name in rows if name != "local socket"]
        print("ratio to the local socket (target <= 1.15): " +
              ", ".join(f"{name} {med[name] / med['local socket']:.3f}" for name in remote))
        # each round's runs ran back to back: their ratios share the machine's state at that moment
        paired = {name: statistics.median(r / local for r, local in zip(rows[name], rows["local socket"], strict=True))
                  for name in remote}
        print("median of the rounds' own ratios: " + ", ".join(f"{name} {paired[name]:.3f}" for name in remote))
        _bench_copies(args, work, remote_env, image)
    finally:
        server.stop()
        for volume in _kept_volumes() - before:
            _remove_volume(volume)
        shutil.rmtree(work, ignore_errors=True)


def _kept_volumes() -> set[str]:
    """The volumes hostctl keeps on the engine (inputs, the payload's code: hostctl/runtime/docker/inputs.py)."""
    import docker

    from hostctl.runtime.docker.inputs import kept_volumes

    return {volume.name for volume in kept_volumes(docker.from_env())}


def _remove_input_volumes(inputs: Path) -> None:
    """The volumes the benchmark's runs kept on the engine for these inputs."""
    import docker

    from hostctl.runtime.docker.inputs import LABEL_INPUTS, content_key

    client = docker.from_env()
    for volume in client.volumes.list(filters={"label": f"{LABEL_INPUTS}={content_key(inputs)}"}):
        _remove_volume(volume.name)


def _remove_volume(name: str) -> None:
    import docker

    try:
        docker.from_env().volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def _bench_copies(args: argparse.Namespace, work: Path, env: dict[str, str], image: str) -> None:
    """copy_in / copy_out (put_archive / get_archive, streamed) against `docker cp`, over the same ssh."""
    source = work / "blob"
    source.mkdir()
    block = os.urandom(1 << 20)
    with open(source / "data.bin", "wb") as f:
        for _ in range(args.remote_mb):
            f.write(block)
    script = f"""
import time
from pathlib import Path
from hostctl.runtime.docker.engine import connect
from hostctl.runtime.docker.files import Share, copy_in, copy_out
from hostctl.runtime.docker.labels import run_labels
client = connect()
c = client.containers.create({image!r}, command=["true"], entrypoint=[], labels=run_labels("bench", "bench", False))
t = time.perf_counter(); copy_in(c, [Share(Path({str(source)!r}), "/hostctl/blob", False)])
put = time.perf_counter() - t
back = Path({str(work / "back")!r}); back.mkdir()
t = time.perf_counter(); copy_out(c, [Share(back, "/hostctl/blob", True)], {{}})
get = time.perf_counter() - t
print(put, get, c.id)  # the container is removed below, after docker cp used it too
"""
    env = dict(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    put, get, cid = out.stdout.split()
    try:
        t = time.perf_counter()
        subprocess.run(["docker", "cp", str(source / "data.bin"), f"{cid}:/hostctl/blob/again.bin"], env=env,
                       check=True, capture_output=True)
        cp_put = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(["docker", "cp", f"{cid}:/hostctl/blob/data.bin", str(work / "cp-back.bin")], env=env,
                       check=True, capture_output=True)
        cp_get = time.perf_counter() - t
    finally:
        subprocess.run(["docker", "rm", "-f", cid], env=env, capture_output=True)
    mb = args.remote_mb * 1.048576
    print(f"copies of one {mb:.0f} MB file over ssh:  hostctl put {float(put):.2f} s ({mb / float(put):.0f} MB/s), "
          f"get {float(get):.2f} s;  docker cp in {cp_put:.2f} s ({mb / cp_put:.0f} MB/s), out {cp_get:.2f} s")


NNDCT_VENV_PYTHON = "/work/scratch/nndct-venv/bin/python"


def _hybrid_inputs(directory: Path, args: argparse.Namespace):
    import torch
    from helpers import make_inputs

    from container_payload.models.unet import Unet

    torch.manual_seed(0)
    model = Unet(num_classes=args.num_classes, width=args.width, depth=args.depth)
    return make_inputs(directory, model, n_calib=args.samples, n_test=args.test_samples, size=tuple(args.size),
                       num_classes=args.num_classes)


def _compare_runs(vai: Path, hybrid: Path) -> list[str]:
    import json

    import h5py
    import numpy as np
    import torch

    lines = []
    a, b = (json.loads((d / "quant_info.json").read_text()) for d in (vai, hybrid))
    keys = ("param", "output", "input", "bias_corrected")
    differ = [f"{section}:{name}" for section in ("param", "output")
              for name in sorted(set(a[section]) | set(b[section])) if a[section].get(name) != b[section].get(name)]
    same = all(a.get(k) == b.get(k) for k in keys)
    lines.append(f"quant_info.json ({', '.join(keys)}): {'identical' if same else 'DIFFERENT'}"
                 f" ({len(a['param'])} params, {len(a['output'])} outputs"
                 + (f"; differ: {', '.join(differ[:8])}" if differ else "") + ")")
    if (vai / "bias_corr.pth").exists() or (hybrid / "bias_corr.pth").exists():
        ca, cb = (torch.load(d / "bias_corr.pth") if (d / "bias_corr.pth").exists() else {} for d in (vai, hybrid))
        worst = max((float(np.max(np.abs(np.asarray(ca[k]) - np.asarray(cb[k])))) for k in ca
                     if k in cb and ca[k] is not None and cb[k] is not None), default=0.0)
        lines.append(f"bias_corr.pth: same keys {set(ca) == set(cb)}, max abs diff {worst:.3g}")
    with h5py.File(vai / "quantization_test_preds.h5") as pa, h5py.File(hybrid / "quantization_test_preds.h5") as pb:
        names = list(pa)
        diff, same_px, total, identical = 0.0, 0, 0, list(pb) == names
        for name in names:
            x, y = pa[name][()], pb[name][()]
            identical = identical and np.array_equal(x, y)
            diff = max(diff, float(np.max(np.abs(x - y))))
            same_px += int(np.sum(x.argmax(1) == y.argmax(1)))
            total += x.size // x.shape[1]
    lines.append(f"quantized predictions ({len(names)} samples): {'identical' if identical else 'DIFFERENT'} "
                 f"(max abs diff {diff:.3g}, argmax agreement {same_px / max(total, 1):.4%})")
    return lines


def bench_hybrid(args: argparse.Namespace) -> None:
    """--quantizer vai against --quantizer hybrid on the same inputs, --hybrid-runs pairs interleaved (vai, hybrid,
    vai, ...), on the local runtime (--python) or in an image (--runtime docker --image, e.g. the one
    scripts/vai-like-image.sh builds); with --neighbour beside a CPU-bound process. Medians and spread of each
    stage, and whether the first pair's quant_info.json and predictions are identical."""
    import json

    python = args.python or (NNDCT_VENV_PYTHON if Path(NNDCT_VENV_PYTHON).exists() else sys.executable)
    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-hybrid-"))
    env = dict(os.environ, HOSTCTL_CACHE_DIR=str(work / "cache"), COLUMNS="120")
    where = ["--runtime", "local", "--python", python] if args.runtime == "local" else \
        ["--runtime", "docker", "--image", args.image or "hostctl-vai-like:3.5", "--pull", "never"]
    neighbour = None
    try:
        inputs = _hybrid_inputs(work / "in", args)
        common = [sys.executable, "-m", "hostctl", "quantize", *where,
                  "--input-dir", str(inputs.dir), "--input-size", *map(str, args.size),
                  "--num-classes", str(args.num_classes), "--model-arg", f"width={args.width}",
                  "--model-arg", f"depth={args.depth}", "--calib-batch-size", str(args.batch_size),
                  "--quant-opt", str(args.quant_opt), "--no-evaluate",
                  *[a for e in args.export for a in ("--export", e)]]
        if args.neighbour:
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(2)
        runs: dict[str, list[tuple[float, dict, Path]]] = {"vai": [], "hybrid": []}
        for i in range(args.hybrid_runs):
            for quantizer in ("vai", "hybrid"):
                out = work / f"{quantizer}{i}"
                wall, _ = timed(common + ["--quantizer", quantizer, "--output-dir", str(out)], "model ", env=env)
                run = json.loads((out / "run.json").read_text())
                runs[quantizer].append((wall, dict(run["payload"], threads=run["runtime"].get("threads")), out))
        load = " ".join(open("/proc/loadavg").read().split()[:3])
        print(f"\nhybrid benchmark: {' '.join(where)}, Unet width {args.width} depth {args.depth}, {args.samples} "
              f"calibration + {args.test_samples} test samples of {'x'.join(map(str, args.size))}, calibration "
              f"batch {args.batch_size}, quant_opt {args.quant_opt}, {args.hybrid_runs} interleaved pair(s)"
              f"{', beside a CPU-bound process' if args.neighbour else ''}, load average {load}")
        hp0 = runs["hybrid"][0][1]
        print(f"hybrid took the path: {hp0['backend']}; check: {json.dumps(hp0.get('check'))}; threads: "
              f"{json.dumps((hp0.get('threads') or {}).get('environment'))}")
        stages = list(dict.fromkeys(k for q in runs for r in runs[q] for k in r[1]["timings"]))

        def med(quantizer: str, pick) -> tuple[float, str]:  # noqa: ANN001 - pick(run) -> seconds or None
            values = [v for v in (pick(r) for r in runs[quantizer]) if v is not None]
            return (statistics.median(values) if values else float("nan")), _listed(values)

        print(f"{'stage':12} {'vai s (median; runs)':>28} {'hybrid s (median; runs)':>28} {'vai/hybrid':>11}")
        rows = [(stage, lambda r, st=stage: r[1]["timings"].get(st)) for stage in stages]
        rows.append(("quantize", lambda r: sum(r[1]["timings"].get(k, 0.0)
                                               for k in ("calibrate", "test", "check", "export"))))
        rows.append(("whole run", lambda r: r[0]))
        for name, pick in rows:
            (v, vs), (h, hs) = med("vai", pick), med("hybrid", pick)
            ratio = f"{v / h:11.2f}" if v == v and h == h and h else f"{'-':>11}"
            print(f"{name:12} {v:8.2f} ({vs:>17}) {h:8.2f} ({hs:>17}) {ratio}")
        for line in _compare_runs(runs["vai"][0][2], runs["hybrid"][0][2]):
            print(line)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench_payload(args: argparse.Namespace) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_payload.py"), *args.payload_args], check=True)
    bench_whole_run(args)


FLOAT_FORWARD = """
import sys, h5py, torch
from container_payload.models.unet import Unet
samples, weights, calib_batch, eval_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = Unet(num_classes=7, in_channels=3, width=32, depth=4)
model.load_state_dict(torch.load(weights))
model.eval()
with h5py.File(samples, "r") as h5, torch.no_grad():
    for group, size in (("calibration", calib_batch), ("test", eval_batch)):
        names = list(h5[group])
        for i in range(0, len(names), size):
            model(torch.stack([torch.from_numpy(h5[group][n][()]) for n in names[i:i + size]]))
print("model done")
"""


def bench_whole_run(args: argparse.Namespace) -> None:
    """`hostctl quantize --runtime local --quantizer portable` against a plain float forward of the same batches
    (every calibration and test sample once, with the same batch sizes) in a fresh process, interleaved."""
    import torch
    from bench_payload import make_batches, make_model
    from helpers import write_samples

    from hostctl.options import EVAL_BATCH

    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-run-"))
    env = dict(os.environ, HOSTCTL_CACHE_DIR=str(work / "cache"), COLUMNS="120", PYTHONPATH=str(ROOT))
    try:
        batches = make_batches(-(-(args.run_calib + args.run_test) // 8), 8, 256, seed=1)
        arrays = [a.numpy() for b in batches for a in b][:args.run_calib + args.run_test]
        model = make_model("unet", batches)
        (work / "in").mkdir()
        torch.save(model.state_dict(), work / "in" / "state_dict.pt")
        calib = {f"c{i:04d}": a for i, a in enumerate(arrays[:args.run_calib])}
        test = {f"t{i:04d}": a for i, a in enumerate(arrays[args.run_calib:])}
        gen = torch.Generator().manual_seed(4)
        labels = {k: torch.randint(0, 7, (256, 256), generator=gen, dtype=torch.uint8).numpy() for k in test}
        write_samples(work / "in" / "quantization_samples.h5", calib, test, labels)
        hostctl = [sys.executable, "-m", "hostctl", "quantize", "--runtime", "local", "--quantizer", "portable",
                   "--input-dir", str(work / "in"), "--input-size", "3", "256", "256", "--num-classes", "7",
                   "--model-arg", "width=32", "--model-arg", "depth=4", "--calib-batch-size", "8"]
        plain = [sys.executable, "-c", FLOAT_FORWARD, str(work / "in" / "quantization_samples.h5"),
                 str(work / "in" / "state_dict.pt"), "8", str(EVAL_BATCH)]
        walls: dict[str, list[float]] = {"hostctl quantize": [], "float forward": []}
        for i in range(args.whole_runs):
            walls["float forward"].append(timed(plain, "model done", env=env)[0])
            walls["hostctl quantize"].append(timed(hostctl + ["--output-dir", str(work / f"out{i}")], "model ",
                                                   env=env)[0])
            shutil.rmtree(work / f"out{i}", ignore_errors=True)
        print(f"\nwhole run: Unet width 32 depth 4, {args.run_calib} calibration + {args.run_test} test samples of "
              f"3x256x256, calibration batch 8, test batch {EVAL_BATCH}, {args.whole_runs} interleaved runs each "
              f"(fresh processes), load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
        for name, values in walls.items():
            print(f"  {name:18} median {statistics.median(values):7.1f} s  ({', '.join(f'{v:.1f}' for v in values)})")
        ratio = statistics.median(walls["hostctl quantize"]) / statistics.median(walls["float forward"])
        print(f"  ratio {ratio:.2f} (target <= 1.5, issue 25): {'met' if ratio <= 1.5 else 'NOT MET'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _listed(values) -> str:  # noqa: ANN001 - any iterable of floats
    return ", ".join(f"{v:.2f}" for v in values)


def bench_inspect(args: argparse.Namespace) -> None:
    """Whole processes and in-process inspections, interleaved: `hostctl inspect` (this interpreter for the CLI,
    --python for the payload) and its inspection alone, against vai_q_pytorch's rule-based Inspector in a
    fresh --python process (imports, model, inspection) and its inspect() call alone."""
    import json

    python = args.python or (NNDCT_VENV_PYTHON if Path(NNDCT_VENV_PYTHON).exists() else sys.executable)
    utf = args.utf_path
    has_nndct = subprocess.run([python, "-c", "import pytorch_nndct"], capture_output=True).returncode == 0 and \
        utf is not None and (Path(utf) / "vai_utf").is_dir()
    model = args.inspect_model
    worker = [python, str(ROOT / "scripts" / "bench_inspect.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    spec = ["--model", "bench_inspect:LRASPP", "--model-path", str(ROOT / "scripts")] if model == "lraspp" else \
        ["--model-arg", "width=32", "--model-arg", "depth=4"]
    work = Path(tempfile.mkdtemp(prefix="hostctl-bench-inspect-"))
    cli = [sys.executable, "-m", "hostctl", "inspect", "--python", python, "--target", args.target, "--input-size",
           "3", "512", "512", *spec]
    inside: dict[str, list[float]] = {"hostctl": [], "nndct": []}
    whole: dict[str, list[float]] = {"hostctl": [], "nndct": []}
    stages: list[dict] = []
    try:
        for i in range(args.runs):
            for who in ("hostctl", "nndct") if has_nndct else ("hostctl",):
                extra = [str(utf)] if who == "nndct" else []
                start = time.perf_counter()
                proc = subprocess.run(worker + [who, model, args.target] + extra, capture_output=True, text=True,
                                      env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"{who} inspection failed:\n{proc.stderr[-2000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                inside[who].append(result["seconds"])
                if who == "nndct":
                    whole["nndct"].append(time.perf_counter() - start)
                else:
                    stages.append(result["stages"])
                    whole["hostctl"].append(timed(cli + ["--output-dir", str(work / f"o{i}")], "inspection in",
                                                  env=dict(env, PYTHONPATH=str(ROOT)))[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"\ninspection of {model} (3x512x512) for {args.target}, {args.runs} interleaved runs each, fresh "
          f"processes, OMP_NUM_THREADS=1, models under {python}, load average {load}")
    for what, values in (("whole process", whole), ("inspection alone", inside)):
        line = f"  {what:17}"
        for who in ("hostctl", "nndct"):
            if values[who]:
                line += f"  {who} median {statistics.median(values[who]):5.2f} s ({_listed(values[who])})"
        if values["nndct"]:
            line += f"  ratio {statistics.median(values['hostctl']) / statistics.median(values['nndct']):.2f}"
        print(line)
    for stage in stages[0]:
        print(f"    hostctl {stage:22} {statistics.median(s[stage] for s in stages):6.3f} s")
    if not has_nndct:
        print("  (vai_q_pytorch's Inspector not timed: pass --python with pytorch_nndct and --utf-path, see "
              "tests/inspect_golden/README.md)")
    print("  whole process: `hostctl inspect` (its CLI here, the payload under the models' interpreter, the files "
          "and the picture) against nndct's worker process (imports, model, Inspector.inspect)")


def bench_threads(args: argparse.Namespace) -> None:
    import json

    from hostctl.threads import allowed_cpus, plan_threads

    cpus = allowed_cpus()
    candidates = {
        "1 thread": {"OMP_NUM_THREADS": "1"},
        f"{cpus} spinning (torch's default)": {"OMP_NUM_THREADS": str(cpus)},
        f"{cpus} passive": {"OMP_NUM_THREADS": str(cpus), "OMP_WAIT_POLICY": "PASSIVE"},
        f"{cpus} spin 10k": {"OMP_NUM_THREADS": str(cpus), "GOMP_SPINCOUNT": "10000"},
    }
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")}
    worker = [sys.executable, str(ROOT / "scripts" / "bench_threads.py"), str(args.thread_batches)]
    table: dict[tuple[str, str], list[dict]] = {}
    for condition in ("quiet", "neighbour"):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "neighbour" else None
        try:
            if neighbour is not None:
                time.sleep(5)  # let the load average see it, as hostctl's plan would
            plan = plan_threads()
            label = f"hostctl's plan ({plan.threads}, {'passive' if plan.wait_policy == 'PASSIVE' else 'spinning'})"
            runs = dict(candidates, **{label: plan.environment()})
            for _ in range(args.runs):
                for name, env in runs.items():
                    proc = subprocess.run(worker, capture_output=True, text=True, env=dict(base, **env))
                    if proc.returncode != 0:
                        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
                    table.setdefault((condition, name), []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    print(f"\nthread policies: small Unet (width 16, depth 3), {args.thread_batches} batches of 8 at 3x96x96, "
          f"{cpus} CPUs, {args.runs} interleaved runs each in fresh processes; medians in seconds, and against 1 "
          "thread in the same condition")
    print(f"  {'condition':10} {'policy':30} {'float':>13} {'calibration':>13} {'test':>13}")
    for (condition, name), results in table.items():
        one = table[(condition, "1 thread")]
        cells = []
        for key in ("float", "calibration", "test"):
            median = statistics.median(r[key] for r in results)
            cells.append(f"{median:6.2f} {median / statistics.median(r[key] for r in one):4.2f}x")
        print(f"  {condition:10} {name:30} " + " ".join(f"{c:>13}" for c in cells))


def main() -> None:
    if sys.argv[1:2] == ["finetune"]:  # its own options: scripts/bench_finetune.py --help
        import bench_finetune

        sys.exit(bench_finetune.main(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("docker", "payload", "run", "hybrid", "inspect", "threads", "remote", "all"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default=os.environ.get("HOSTCTL_TEST_IMAGE"))
    hybrid = parser.add_argument_group("hybrid")
    hybrid.add_argument("--python", help=f"interpreter with pytorch_nndct (default: {NNDCT_VENV_PYTHON} if it exists)")
    hybrid.add_argument("--samples", type=int, default=200, help="calibration samples (default 200)")
    hybrid.add_argument("--test-samples", type=int, default=8)
    hybrid.add_argument("--size", type=int, nargs=3, default=[3, 128, 128], metavar=("C", "H", "W"))
    hybrid.add_argument("--width", type=int, default=16)
    hybrid.add_argument("--depth", type=int, default=3)
    hybrid.add_argument("--num-classes", type=int, default=7)
    hybrid.add_argument("--batch-size", type=int, default=8, help="calibration batch")
    hybrid.add_argument("--quant-opt", type=int, default=3, help="passed to both runs (default 3, nndct's)")
    hybrid.add_argument("--export", action="append", default=None,
                        help="passed to both runs (default: none; the nndct venv has no xir for xmodel)")
    hybrid.add_argument("--keep", action="store_true", help="keep the inputs and both runs' outputs")
    hybrid.add_argument("--runtime", choices=("local", "docker"), default="local",
                        help="docker: in --image (default hostctl-vai-like:3.5, scripts/vai-like-image.sh)")
    hybrid.add_argument("--hybrid-runs", type=int, default=1, help="interleaved vai/hybrid pairs (default 1)")
    hybrid.add_argument("--neighbour", action="store_true", help="beside a CPU-bound process")
    whole = parser.add_argument_group("payload: the whole-run comparison")
    whole.add_argument("--run-calib", type=int, default=160, help="calibration samples (default 160)")
    whole.add_argument("--run-test", type=int, default=16, help="test samples (default 16)")
    whole.add_argument("--whole-runs", type=int, default=2, help="interleaved runs of each (default 2)")
    parser.add_argument("--thread-batches", type=int, default=10, help="threads: batches per workload")
    remote = parser.add_argument_group("remote")
    remote.add_argument("--remote-calib", type=int, default=96, help="calibration samples (default 96)")
    remote.add_argument("--remote-mb", type=int, default=256, help="size of the copied file in MiB (default 256)")
    remote.add_argument("--threads", type=int, help="the same --threads for every run (default: each run's plan)")
    inspect = parser.add_argument_group("inspect")
    inspect.add_argument("--utf-path", default="/root/vai_utf_adapter",
                         help="the vai_utf stand-in nndct's rule-based Inspector imports")
    inspect.add_argument("--inspect-model", choices=("lraspp", "unet"), default="lraspp")
    inspect.add_argument("--target", default="DPUCZDX8G_ISA1_B4096")
    parser.add_argument("payload_args", nargs="*", help="passed to bench_payload.py (after --)")
    args = parser.parse_args()
    args.export = args.export or ["none"]
    if args.what == "hybrid":
        bench_hybrid(args)
    if args.what in ("payload", "all"):
        bench_payload(args)
    if args.what == "run":
        bench_whole_run(args)
    if args.what == "inspect":
        bench_inspect(args)
    if args.what == "threads":
        bench_threads(args)
    if args.what == "remote":
        bench_remote(args)
    if args.what in ("docker", "all"):
        bench_docker(args)


if __name__ == "__main__":
    main()
