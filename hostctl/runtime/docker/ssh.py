"""ssh:// engines through the system's `ssh`, as the docker CLI reaches them (`ssh HOST docker system dial-stdio`).

Why the system ssh and not paramiko: the user's ~/.ssh/config (Host aliases, ProxyJump, Include, Match), the
agent, hardware keys and known_hosts all work exactly as they do for `docker -H ssh://...` and plain `ssh`, and
hostctl needs no new Python dependency. docker-py's own `use_ssh_client=True` mode runs the system ssh too, but
docker 7.x imports paramiko at the top of that module, so without paramiko the SDK refuses every ssh:// URL
("Install paramiko package to enable ssh:// support"). This module is that mode without the import, plus what a
long run needs from it:
  - ssh's stderr is kept (not sprayed over the progress bars) and its last line names the failure;
  - BatchMode (a password prompt cannot work: several connections are opened), a connect timeout, and keep-alives
    so that a dead link ends ssh, and with it the run, within about 20 seconds;
  - real read timeouts on the pipe, so `wait(timeout=...)` polls as it does on a socket;
  - connections are reused while their ssh process lives (one ssh per concurrent request, not per request);
  - one login per hostctl process (hostctl/ssh_login.py): a ControlMaster on a socket in a private directory of
    this process, started by the entry point while the CLI starts (else by the first connection), and every
    connection (the attach stream, the copies, the lease's heartbeat, concurrent
    requests) is a session multiplexed over it, opened in milliseconds instead of a key exchange each (0.7 s
    on loopback here, more over a WAN; a hardware key asks for a touch once, not per connection). The master
    stays CONTROL_PERSIST seconds after its last session, so a killed hostctl leaves no ssh behind for longer;
    a dead link ends the master and every session with it, as it ended each ssh before.
"""

from __future__ import annotations

import collections
import io
import os
import select
import socket
import subprocess
import threading
from typing import Any

import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter

from hostctl import ssh_login
from hostctl.ssh_login import SSH_OPTIONS, control_options, destination, ssh_environment

REMOTE_COMMAND = "docker system dial-stdio"


class SshFailure(ConnectionError):
    """ssh ended (or could not start): its exit status and the last line it printed on stderr."""

    def __init__(self, target: str, returncode: int | None, last_line: str) -> None:
        self.target = target
        self.returncode = returncode
        self.last_line = last_line
        status = "could not run ssh" if returncode is None else f"ssh exited with status {returncode}"
        super().__init__(f"{status} connecting to {target}: {last_line or 'no message'}")


class SshMissing(SshFailure):
    def __init__(self, target: str) -> None:
        super().__init__(target, None, "no `ssh` command on PATH")


def ssh_failure(exc: BaseException | None) -> SshFailure | None:
    """The SshFailure behind an exception, however deep requests and urllib3 wrapped it."""
    seen = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, SshFailure):
            return item
        stack += [item.__cause__, item.__context__, *[a for a in getattr(item, "args", ()) if
                                                       isinstance(a, BaseException)]]
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return None


def stream_failure(stream: Any) -> SshFailure | None:
    """Why an attach stream over ssh ended, if ssh failed: docker's CancellableStream turns every OSError into
    a plain end of the stream, so the failure is read back from the connection it came through."""
    try:
        channel = stream._response.raw._fp.fp.channel
    except AttributeError:
        return None
    return getattr(channel, "failure", None)


def ssh_command(url: str) -> list[str]:
    """The ssh command line for an ssh://[user@]host[:port] URL (what the docker CLI runs, plus SSH_OPTIONS)."""
    return ["ssh", *SSH_OPTIONS, *control_options(), *destination(url), REMOTE_COMMAND]


class _PipeReader(io.RawIOBase):
    """ssh's stdout with the socket's timeout: a read that waits longer raises TimeoutError, as a socket would."""

    def __init__(self, owner: SshSocket) -> None:
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        fd = self.owner.proc.stdout.fileno()
        timeout = self.owner.read_timeout
        if timeout is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError("timed out")
        data = os.read(fd, len(buffer))
        buffer[:len(data)] = data
        if not data:
            self.owner.ended()
        return len(data)


class _ResponseFile:
    """What http.client reads one response from: the connection's one buffered reader, which closing this does
    not close (a socket's makefile() is a fresh file each time, and the next response on the connection needs
    the bytes already buffered)."""

    def __init__(self, reader: io.BufferedReader, channel: SshSocket) -> None:
        self._reader = reader
        self.channel = channel  # docker's _get_raw_response_socket reads attach streams from `.channel`
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def close(self) -> None:
        self.closed = True

    def flush(self) -> None:
        pass


class SshSocket(socket.socket):
    """A connection to the engine over `ssh HOST docker system dial-stdio`, shaped like the socket urllib3 wants.

    Like docker-py's SSHSocket it is an unconnected socket.socket underneath: docker's stream reader polls the
    socket before each recv, and an unconnected socket polls ready at once; reads then go to ssh's stdout.
    """

    def __init__(self, url: str) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.url = url
        self.proc: subprocess.Popen[bytes] | None = None
        self.read_timeout: float | None = None
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._reader: io.BufferedReader | None = None
        self._stderr_thread: threading.Thread | None = None
        self.failure: SshFailure | None = None

    def connect(self, *_: Any) -> None:  # socket's signature; the address is the URL's
        command = ssh_command(self.url)
        ssh_login.wait(self.url)  # join the login the entry point started, not log in beside it
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                env=ssh_environment(),
                # Its own session: the terminal's Ctrl-C is hostctl's to handle (stop and remove the container
                # over this very link), not ssh's to die of.
                start_new_session=True)
        except FileNotFoundError as exc:
            raise SshMissing(self.url) from exc
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="ssh-stderr", daemon=True)
        self._stderr_thread.start()
        self._reader = io.BufferedReader(_PipeReader(self), buffer_size=65536)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.stderr_lines.append(line)

    def last_line(self) -> str:
        """ssh's last stderr line that says something (not the known_hosts notices)."""
        for line in reversed(self.stderr_lines):
            if not line.startswith("Warning: Permanently added"):
                return line
        return ""

    def ended(self) -> None:
        """ssh's stdout is at its end: fine if ssh exited 0 (the engine closed the connection), else a failure."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        if code != 0:
            self._stderr_done()
            self.failure = SshFailure(self.url, code, self.last_line())
            raise self.failure

    def _stderr_done(self) -> None:
        # The stderr thread may still be reading ssh's last words when the exit status is known.
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=1.0)

    def alive(self) -> bool:
        """Still usable for another request: ssh runs and has nothing unread (an early EOF shows as readable)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        return not select.select([self.proc.stdout.fileno()], [], [], 0)[0]

    def settimeout(self, value: float | None) -> None:
        self.read_timeout = value

    def gettimeout(self) -> float | None:
        return self.read_timeout

    def sendall(self, data: bytes, *_: Any) -> None:  # type: ignore[override] - flags are meaningless on a pipe
        assert self.proc is not None and self.proc.stdin is not None
        view = memoryview(data)
        try:
            while view:
                written = self.proc.stdin.write(view)
                view = view[written or 0:]
        except (BrokenPipeError, ValueError) as exc:
            code = self.proc.poll()
            self._stderr_done()
            raise SshFailure(self.url, code, self.last_line()) from exc

    def send(self, data: bytes, *_: Any) -> int:  # type: ignore[override]
        self.sendall(data)
        return len(data)

    def recv(self, n: int, *_: Any) -> bytes:  # type: ignore[override]
        assert self._reader is not None
        return self._reader.read1(n)

    def makefile(self, *_: Any, **__: Any) -> _ResponseFile:  # type: ignore[override]
        assert self._reader is not None
        return _ResponseFile(self._reader, self)

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()  # EOF: dial-stdio ends the engine connection
            except OSError:
                pass
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        super().close()


class SshConnection(urllib3.connection.HTTPConnection):
    def __init__(self, url: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.ssh_url = url

    def connect(self) -> None:
        sock = SshSocket(self.ssh_url)
        sock.settimeout(self.timeout)
        sock.connect()
        self.sock = sock

    @property
    def is_connected(self) -> bool:
        return isinstance(self.sock, SshSocket) and self.sock.alive()


class SshConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    scheme = "ssh"

    def __init__(self, url: str, timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self.ssh_url = url

    def _new_conn(self) -> SshConnection:
        return SshConnection(self.ssh_url, self.timeout.read_timeout if hasattr(self.timeout, "read_timeout")
                             else self.timeout)


class SshAdapter(BaseHTTPAdapter):
    """requests adapter for `http+docker://ssh`, built as docker-py builds its SSHHTTPAdapter."""

    __attrs__ = [*BaseHTTPAdapter.__attrs__, "pools", "timeout", "max_pool_size"]

    def __init__(self, base_url: str, timeout: float = 60, pool_connections: int = 25, max_pool_size: int = 10,
                 shell_out: bool = True) -> None:
        self.ssh_url = base_url
        self.timeout = timeout
        self.max_pool_size = max_pool_size
        self.pools = urllib3._collections.RecentlyUsedContainer(pool_connections, dispose_func=lambda p: p.close())
        super().__init__()

    def get_connection(self, url: str, proxies: Any = None) -> SshConnectionPool:
        # One pool for every path (docker-py keys its pools by the whole URL: a new ssh login per endpoint).
        with self.pools.lock:
            pool = self.pools.get(self.ssh_url)
            if pool is None:
                pool = SshConnectionPool(self.ssh_url, self.timeout, self.max_pool_size)
                self.pools[self.ssh_url] = pool
        return pool


def warm_up(client: Any) -> None:
    """Open a second connection in the background: a run holds one for the attach stream while its other
    requests need another. It is a session on the first connection's master (no second login), but ssh still
    takes tens of milliseconds to start."""
    adapter = client.api.adapters.get("http+docker://ssh")
    if not isinstance(adapter, SshAdapter):
        return
    pool = adapter.get_connection("")

    def connect() -> None:
        conn = pool._new_conn()
        try:
            conn.connect()
            pool.pool.get_nowait()  # one of the pool's empty slots, for this connection
            pool._put_conn(conn)
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first request logs in itself
            conn.close()

    threading.Thread(target=connect, name="ssh-warm-up", daemon=True).start()


def install_adapter() -> Any:
    """Make docker-py's ssh:// branch use SshAdapter; returns a function that puts the SDK's own one back.

    The SDK builds its adapter as `SSHHTTPAdapter(base_url, timeout, pool_connections=..., max_pool_size=...,
    shell_out=use_ssh_client)` and mounts it on `http+docker://ssh`; only the class is swapped, for the duration
    of one client's construction, so everything else (DOCKER_HOST, contexts, version negotiation) stays the SDK's.
    """
    import docker.api.client as api_client

    missing = object()
    before = getattr(api_client, "SSHHTTPAdapter", missing)
    api_client.SSHHTTPAdapter = SshAdapter

    def restore() -> None:
        if before is missing:
            del api_client.SSHHTTPAdapter
        else:
            api_client.SSHHTTPAdapter = before

    return restore

