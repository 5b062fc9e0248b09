"""The payload's interpreter, started while the CLI itself starts (for `hostctl inspect` on the local runtime).

A local inspection takes a few seconds, and more than a second of it is the payload's `import torch`. Started the
ordinary way, that import waits until the CLI has imported typer and rich and parsed its options (0.3-0.4 s). So
the entry point (hostctl/__main__.py) calls `start(argv)` before anything else: when the command line asks for a
local inspection, the payload starts at once as `python -m container_payload --job -`, imports torch, and waits
for its job on stdin (container_payload/__main__.py). LocalRuntime.run() calls `take()`, which hands over that
process only when its interpreter and environment are exactly those LocalRuntime would start it with; otherwise
it is ended and the payload starts as usual. A warm payload never taken is ended when hostctl exits, and ends
itself at the end of its input should hostctl be killed.

Only the standard library, hostctl.argv and hostctl.threads are imported here: this runs before typer's import.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import container_payload
from hostctl.argv import last_value
from hostctl.threads import plan_threads

PAYLOAD_DIR = Path(container_payload.__file__).resolve().parent
# the threads `hostctl inspect` runs its one forward with on the local runtime (hostctl/inspect.py)
INSPECT_THREADS = 1
# the options that mean no inspection runs, or not on the local runtime's payload
_NOT_RUN = ("--help", "-h", "--list-targets")


def payload_env(shim: Path) -> dict[str, str]:
    """The payload's environment, with `shim` holding container_payload as the first entry of its path.

    Only container_payload goes on the path: a foreign interpreter must not see this one's packages."""
    os.symlink(PAYLOAD_DIR, shim / "container_payload")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    return env


@dataclass
class WarmPayload:
    python: str
    extra_env: dict[str, str]  # what the payload's environment adds to payload_env()'s
    process: subprocess.Popen
    shim: str

    def hand(self, job_file: Path, cwd: Path) -> subprocess.Popen:
        """Give the waiting payload its job; it works in `cwd` as a payload started there would."""
        assert self.process.stdin is not None
        ticket = json.dumps({"job": str(job_file), "cwd": str(cwd)}) + "\n"
        try:
            self.process.stdin.write(ticket.encode("utf-8"))
            self.process.stdin.close()
        except OSError:  # it died on its own: its exit status and stderr tell why, as for any payload
            pass
        return self.process

    def close(self) -> None:
        """End the process (when still running) and remove its shim."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.shim, ignore_errors=True)


_warm: WarmPayload | None = None


def start(argv: list[str]) -> None:
    """Start the payload ahead of the CLI when `argv` asks for an inspection on the local runtime."""
    global _warm
    python = _local_inspection_python(argv)
    resolved = shutil.which(python) if python else None
    if resolved is None or _warm is not None:
        return
    shim = tempfile.mkdtemp(prefix=f"hostctl-payload-{os.getpid()}-warm-")
    extra = plan_threads(INSPECT_THREADS).environment()
    try:
        env = dict(payload_env(Path(shim)), **extra)
        process = subprocess.Popen([os.path.abspath(resolved), "-u", "-m", "container_payload", "--job", "-"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env, cwd=shim, start_new_session=True)
    except OSError:  # the CLI says what is wrong with the interpreter
        shutil.rmtree(shim, ignore_errors=True)
        return
    _warm = WarmPayload(os.path.abspath(resolved), extra, process, shim)
    atexit.register(discard)


def take(python: str, extra_env: dict[str, str]) -> WarmPayload | None:
    """The warm payload if it runs `python` with these variables and is still alive; otherwise it is ended."""
    global _warm
    warm, _warm = _warm, None
    if warm is None:
        return None
    if warm.python == python and warm.extra_env == extra_env and warm.process.poll() is None:
        return warm
    warm.close()
    return None


def discard() -> None:
    """End a warm payload that no run took."""
    global _warm
    warm, _warm = _warm, None
    if warm is not None:
        warm.close()


def _local_inspection_python(argv: list[str]) -> str | None:
    """The interpreter `hostctl inspect` will run its payload with, read from the command line and the
    environment as its options are; None when argv is not such an inspection. A wrong guess costs only a process
    that take() ends: the options are parsed for real by the CLI."""
    if not argv or argv[0] != "inspect" or any(a in _NOT_RUN for a in argv):
        return None
    runtime = last_value(argv, "--runtime") or os.environ.get("HOSTCTL_INSPECT_RUNTIME") or "local"
    if runtime != "local":
        return None
    return last_value(argv, "--python") or os.environ.get("HOSTCTL_PYTHON") or sys.executable

