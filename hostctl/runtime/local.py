"""The payload as a subprocess of this machine's Python (or of --python, e.g. a Vitis AI conda env's)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from hostctl import warm
from hostctl.errors import EnvironmentProblem
from hostctl.options import QuantizeOptions
from hostctl.runtime import LineSink
from hostctl.runtime.lines import LineSplitter
from hostctl.signals import SignalTrap
from hostctl.threads import CpuSample, ThreadPlan, plan_threads
from hostctl.ui import Reporter

GRACE_SECONDS = 5.0
# What the payload imports besides the standard library, and the oldest Python it runs on.
PAYLOAD_NEEDS = ("torch", "numpy", "h5py")
PAYLOAD_MIN_PYTHON = (3, 8)
PROBE_SECONDS = 60.0
# Asks an interpreter for its version and which of PAYLOAD_NEEDS it cannot find, without importing them (torch
# takes seconds to import); any Python 3 runs it.
_PROBE = ("import sys, importlib.util as u; print(sys.version_info[0], sys.version_info[1], "
          "*[m for m in sys.argv[1:] if u.find_spec(m) is None])")


_PROBE_MARK = "@@hostctl-import-failed "

class LocalRuntime:
    def __init__(self, opts: QuantizeOptions, run_dir: Path, reporter: Reporter, trap: SignalTrap) -> None:
        self.opts = opts
        self.run_dir = run_dir
        self.reporter = reporter
        self.trap = trap
        self.python = opts.python or sys.executable
        self._cpu_sample = CpuSample()  # the thread plan's window runs while prepare() works
        self._threads: ThreadPlan | None = None

    def prepare(self) -> None:
        resolved = shutil.which(self.python)
        if resolved is None:
            raise EnvironmentProblem(f"--python {self.python}: no such interpreter",
                                     "Pass the path of a Python with torch, numpy and h5py.")
        self.python = os.path.abspath(resolved)  # the payload runs in the run directory: ./python must still work
        if self.opts.python is not None:  # this interpreter runs hostctl, which imports them all
            check_interpreter(self.python, self.opts.python)
        self._check_quantizer()

    def _check_quantizer(self) -> None:
        """vai and hybrid need pytorch_nndct, and auto with --export must know which quantizer it gets: asked of
        the payload's interpreter before any work, so that a missing nndct is one line (exit 3 for vai and hybrid,
        2 for an export that auto's portable fallback cannot write), not a traceback after the float predictions."""
        quantizer = self.opts.quantizer
        if quantizer not in ("vai", "hybrid") and not (quantizer == "auto" and self.opts.exports):
            return
        problem = self._import_problem("pytorch_nndct")
        if problem is None:
            return
        if quantizer == "auto":
            from hostctl.validate import check_exports

            check_exports("portable", self.opts.exports or (),
                          f" (what --quantizer auto picks where pytorch_nndct does not import: {problem})")
            return
        shown = self.opts.python or "this Python"
        raise EnvironmentProblem(f"--quantizer {quantizer} needs pytorch_nndct, which {shown} cannot import "
                                 f"({problem})",
                                 "Use --quantizer portable, or --runtime docker with the Vitis AI image, or --python "
                                 "with the Python of a Vitis AI conda env.")

    def _import_problem(self, module: str) -> str | None:
        """Why `module` does not import in the payload's interpreter and environment, or None when it does."""
        # the answer is marked: pytorch_nndct prints lines of its own on import ("CUDA (HIP) is not available...")
        code = ("import importlib, sys\ntry:\n    importlib.import_module(sys.argv[1])\n"
                "except Exception as exc:\n    print('" + _PROBE_MARK + "' + type(exc).__name__ + ': ' + str(exc))\n")
        # Named like the payload's own (below), so that `hostctl clean` sweeps it should this process be killed.
        with tempfile.TemporaryDirectory(prefix=f"hostctl-payload-{os.getpid()}-probe-") as shim:
            try:
                probe = subprocess.run([self.python, "-c", code, module], stdin=subprocess.DEVNULL,
                                       capture_output=True, text=True, timeout=PROBE_SECONDS,
                                       env=warm.payload_env(Path(shim)), cwd=shim)
            except subprocess.TimeoutExpired:
                return f"importing it took more than {PROBE_SECONDS:.0f} s"
        if probe.returncode != 0:
            return (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        answers = [line[len(_PROBE_MARK):] for line in probe.stdout.splitlines() if line.startswith(_PROBE_MARK)]
        return answers[-1] if answers else None

    def view(self, path: Path) -> str:
        return str(path.resolve())

    def describe(self) -> dict[str, Any]:
        return {"runtime": "local", "python": self.python,
                "threads": dict(self.threads.to_dict(), environment=self._threads_env())}

    @property
    def threads(self) -> ThreadPlan:
        if self._threads is None:
            self._threads = plan_threads(self.opts.threads, sample=self._cpu_sample)
        return self._threads

    def _threads_env(self) -> dict[str, str]:
        """The plan's thread variables (hostctl/threads.py); without --threads, ones set in the user's own
        environment are kept."""
        env = self.threads.environment()
        if self.opts.threads is None:
            env.update({k: os.environ[k] for k in env if os.environ.get(k)})
        return env

    def run(self, job_file: Path, on_line: LineSink) -> int:
        started = warm.take(self.python, self._threads_env())
        if started is not None:  # started as the CLI started, torch imported by now (hostctl/warm.py)
            self.reporter.debug(f"running {self.python} -u -m container_payload --job {job_file} (started early)")
            process = started.hand(job_file, self.run_dir)
            try:
                return _pump(process, on_line)
            finally:
                _stop(process, self.trap)
                started.close()
        with tempfile.TemporaryDirectory(prefix=f"hostctl-payload-{os.getpid()}-") as shim:
            env = dict(warm.payload_env(Path(shim)), **self._threads_env())
            argv = [self.python, "-u", "-m", "container_payload", "--job", str(job_file)]
            self.reporter.debug("running " + " ".join(argv))
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env, cwd=self.run_dir, start_new_session=True)
            try:
                return _pump(process, on_line)
            finally:
                _stop(process, self.trap)


def check_interpreter(python: str, shown: str) -> None:
    """Before the payload starts: the interpreter runs, is recent enough and finds what the payload imports.
    Otherwise the payload would die at its first import, with a ModuleNotFoundError traceback in its log."""
    hint = "Pass the Python of an environment with torch, numpy and h5py (e.g. a Vitis AI conda env's)."
    try:
        probe = subprocess.run([python, "-c", _PROBE, *PAYLOAD_NEEDS], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"--python {shown} did not answer within {PROBE_SECONDS:.0f} s", hint) from None
    except OSError as exc:
        raise EnvironmentProblem(f"--python {shown} cannot be run ({exc.strerror or exc})", hint) from None
    words = probe.stdout.split()
    if probe.returncode != 0 or len(words) < 2 or not all(w.isdigit() for w in words[:2]):
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"--python {shown} is not a Python {'.'.join(map(str, PAYLOAD_MIN_PYTHON))} or "
                                 f"later interpreter ({last})", hint)
    version, missing = (int(words[0]), int(words[1])), words[2:]
    if version < PAYLOAD_MIN_PYTHON:
        raise EnvironmentProblem(f"--python {shown} is Python {version[0]}.{version[1]}; the payload needs "
                                 f"{'.'.join(map(str, PAYLOAD_MIN_PYTHON))} or later", hint)
    if missing:
        raise EnvironmentProblem(f"--python {shown} cannot import {', '.join(missing)}, which the payload needs",
                                 f"Install {' '.join(missing)} into that environment (pip install "
                                 f"{' '.join(missing)}), or pass another --python.")


def _pump(process: subprocess.Popen, on_line: LineSink) -> int:
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

    def read(stream: IO[bytes], name: str) -> None:
        splitter = LineSplitter(lambda text: lines.put((name, text)))
        try:
            while chunk := os.read(stream.fileno(), 65536):
                splitter.feed(chunk)
            splitter.close()
        finally:
            lines.put(None)

    readers = [threading.Thread(target=read, args=(s, n), daemon=True)
               for s, n in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    open_streams = len(readers)
    while open_streams:
        item = lines.get()
        if item is None:
            open_streams -= 1
        else:
            on_line(*item)
    return process.wait()


def _stop(process: subprocess.Popen, trap: SignalTrap) -> None:
    """Terminate the payload's process group: TERM, a grace period (cut short by a second signal), KILL."""
    if process.poll() is None:
        trap.on_hurry(lambda: _signal_group(process, signal.SIGKILL))
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
