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

import container_payload
from hostctl.errors import EnvironmentProblem
from hostctl.options import QuantizeOptions
from hostctl.runtime import LineSink
from hostctl.runtime.lines import LineSplitter
from hostctl.signals import SignalTrap
from hostctl.ui import Reporter

GRACE_SECONDS = 5.0
PAYLOAD_DIR = Path(container_payload.__file__).resolve().parent


class LocalRuntime:
    def __init__(self, opts: QuantizeOptions, run_dir: Path, reporter: Reporter, trap: SignalTrap) -> None:
        self.opts = opts
        self.run_dir = run_dir
        self.reporter = reporter
        self.trap = trap
        self.python = opts.python or sys.executable

    def prepare(self) -> None:
        resolved = shutil.which(self.python)
        if resolved is None:
            raise EnvironmentProblem(f"--python {self.python}: no such interpreter",
                                     "Pass the path of a Python with torch, numpy and h5py.")
        self.python = resolved

    def view(self, path: Path) -> str:
        return str(path.resolve())

    def describe(self) -> dict[str, Any]:
        return {"runtime": "local", "python": self.python}

    def run(self, job_file: Path, on_line: LineSink) -> int:
        with tempfile.TemporaryDirectory(prefix=f"hostctl-payload-{os.getpid()}-") as shim:
            # Only container_payload goes on the path: a foreign interpreter must not see this one's packages.
            os.symlink(PAYLOAD_DIR, Path(shim) / "container_payload")
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p)
            argv = [self.python, "-u", "-m", "container_payload", "--job", str(job_file)]
            self.reporter.debug("running " + " ".join(argv))
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env, cwd=self.run_dir, start_new_session=True)
            try:
                return _pump(process, on_line)
            finally:
                _stop(process, self.trap)


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
