"""The one ssh login of a hostctl process against an ssh:// engine, started as early as the command line allows.

Every connection hostctl makes to an ssh:// engine (hostctl/runtime/docker/ssh.py) is a session multiplexed over
one master connection, on a control socket in a directory only this process uses. Logging in is the slow part
(a key exchange: 0.4-0.7 s on loopback, more over a WAN), and until now it waited for the CLI to import typer,
rich and the docker SDK, check the inputs and build the client. So the entry point (hostctl/__main__.py) calls
`start(argv)` first: when the command line names a verb that will talk to the engine and the engine the docker
CLI would use (DOCKER_HOST, else the current context) is ssh://, the master logs in at once, in the background,
while the CLI starts. The first connection waits for that login to end (`wait(url)`), then joins the master.

A failed early login changes nothing: it prints nothing, and the first connection logs in itself and reports
what went wrong, as before. An early login nobody uses ends CONTROL_PERSIST seconds after it began, as any
master ends that long after its last session.

Only the standard library is imported here: this runs before typer's import.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from hostctl.argv import last_value

# Command-line -o options win over ~/.ssh/config (ssh takes the first value it meets), so only what hostctl needs.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
CONNECT_TIMEOUT = 10
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
               "-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}", "-o", f"ServerAliveCountMax={KEEPALIVE_COUNT}"]
CONTROL_PERSIST = 10  # seconds the master outlives its last session
EARLY_WAIT = CONNECT_TIMEOUT + 10  # the longest the first connection waits for the early login

# verb -> (its --runtime option's environment variable, its default runtime); None: the verb always uses the engine
_ENGINE_VERBS: dict[str, tuple[str | None, str] | None] = {
    "quantize": ("HOSTCTL_RUNTIME", "docker"), "inspect": ("HOSTCTL_INSPECT_RUNTIME", "local"),
    "demo": (None, "local"), "compile": None, "doctor": None, "clean": None,
}
_NO_ENGINE = ("--help", "-h", "--print-docker-cmd", "--list-targets")

_lock = threading.Lock()
_control_dir: str | None = None
_early: tuple[str, subprocess.Popen] | None = None  # the URL it logs in to, and the process


def control_options() -> list[str]:
    """ssh's connection sharing for this process: ControlMaster=auto on a socket in a directory only this process
    uses (mode 0700, removed at exit), so that no other program's master is ever joined."""
    global _control_dir
    with _lock:
        if _control_dir is None:
            _control_dir = tempfile.mkdtemp(prefix="hostctl-ssh-")
            atexit.register(shutil.rmtree, _control_dir, True)
    # %C: a hash of the local host, remote host, port and user, so that each engine gets its own master
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir}/%C",
            "-o", f"ControlPersist={CONTROL_PERSIST}"]


def destination(url: str) -> list[str]:
    """ssh's arguments naming the user, port and host of an ssh://[user@]host[:port] URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError(f"not an ssh:// URL: {url}")
    args = []
    if parts.username:
        args += ["-l", urllib.parse.unquote(parts.username)]
    if parts.port:
        args += ["-p", str(parts.port)]
    return [*args, "--", parts.hostname]


def ssh_environment() -> dict[str, str]:
    env = dict(os.environ)
    # As docker-py does: the Python's library path and CA bundle are not ssh's business.
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("SSL_CERT_FILE", None)
    return env


def endpoint() -> str | None:
    """The engine the docker CLI would use, read as docker-py reads it: DOCKER_HOST, else the current context's
    endpoint (DOCKER_CONTEXT, else config.json's currentContext); None for the default context."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        name = os.environ.get("DOCKER_CONTEXT") or json.loads(
            (config_dir / "config.json").read_text()).get("currentContext")
        if not name or name == "default":
            return None
        meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
        return json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the connection itself reports a broken configuration


def start(argv: list[str]) -> None:
    """Log in to an ssh:// engine in the background when `argv` is a command that will use it."""
    global _early
    url = endpoint() if uses_engine(argv) else None
    if not url or not url.startswith("ssh://") or _early is not None:
        return
    try:
        command = ["ssh", *SSH_OPTIONS, *control_options(), "-o", "ControlMaster=yes", "-N", *destination(url)]
        # -N with ControlPersist: ssh goes to the background once logged in, and this process exits (0, or 255
        # when the login failed). Its own session: the terminal's Ctrl-C is hostctl's to handle.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=ssh_environment(), start_new_session=True)
    except (OSError, ValueError):  # no ssh, a malformed URL: the connection itself says so
        return
    _early = (url, process)


def wait(url: str) -> None:
    """Before a connection to `url` starts its ssh: let an early login to it finish (or fail), so that the
    connection joins that master instead of logging in beside it."""
    early = _early
    if early is None or early[0] != url:
        return
    deadline = time.monotonic() + EARLY_WAIT
    try:
        early[1].wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass  # still logging in: the connection goes its own way, as it would have without it


def early_login() -> subprocess.Popen | None:
    """The early login's process, if one was started (for tests)."""
    return _early[1] if _early is not None else None


def uses_engine(argv: list[str]) -> bool:
    if not argv or argv[0] not in _ENGINE_VERBS or any(a in _NO_ENGINE for a in argv):
        return False
    runtime = _ENGINE_VERBS[argv[0]]
    if runtime is None:
        return True
    variable, default = runtime
    chosen = last_value(argv, "--runtime") or (os.environ.get(variable) if variable else None) or default
    return chosen == "docker"

