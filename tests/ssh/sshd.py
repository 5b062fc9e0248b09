"""A real OpenSSH server on a loopback port for the ssh:// tests: Debian's /usr/sbin/sshd -D with a throw-away
host key, a client key, a known_hosts file written here, and an ssh config the client reads.

The client side is what any user has: `ssh` on PATH reading a config. ssh reads ~/.ssh/config from the passwd
entry's home, not $HOME, so the tests put a one-line `ssh` wrapper first on PATH that adds `-F <config>`; hostctl
runs `ssh` from PATH exactly as the docker CLI does. The far side runs `docker system dial-stdio` as the login
user (root in CI, else the caller, who can use the engine's socket when the Docker tests can).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshServer:
    def __init__(self, root: Path, engine_host: str | None) -> None:
        self.root = root
        self.user = getpass.getuser()
        self.port = free_port()
        self.engine_host = engine_host
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key = root / "host_ed25519"
        self.client_key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.config = root / "ssh_config"
        self.bin = root / "bin"
        self.log = root / "sshd.log"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a hostctl that reaches the engine through this server."""
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "DOCKER_HOST": self.url, **extra}

    def start(self) -> None:
        missing = [tool for tool in (SSHD, "ssh", "ssh-keygen") if not shutil.which(tool)]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not found: apt-get install openssh-server openssh-client "
                               "(scripts/test.sh does)")
        self.root.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostctl-test", "-f", str(key)],
                           check=True)
        (self.root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        (self.root / "authorized_keys").chmod(0o600)
        self.write_known_hosts()
        self.write_client_config(self.client_key)
        environment = f"SetEnv DOCKER_HOST={self.engine_host}\n" if self.engine_host else ""
        (self.root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {self.root}/sshd.pid\n"
            f"AuthorizedKeysFile {self.root}/authorized_keys\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"AllowUsers {self.user}\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n{environment}")
        self.start_again()

    def start_again(self) -> None:
        """(Re)start sshd on the same port, keys and configuration."""
        if os.getuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.1)

    def write_known_hosts(self, key: Path | None = None) -> None:
        """known_hosts with this server's host key (or another's, to play a changed host)."""
        public = (key or self.host_key).with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")

    def write_client_config(self, identity: Path) -> None:
        self.config.write_text(f"Host *\n  IdentityFile {identity}\n  IdentitiesOnly yes\n"
                               f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n")
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {self.config} "$@"\n')
        wrapper.chmod(0o755)

    def sessions(self) -> list[int]:
        """Pids of every process serving a connection: each connection's sshd monitor, its network child and
        the command it runs (killing the monitor alone leaves the connection up)."""
        assert self.proc is not None
        found, todo = [], [self.proc.pid]
        while todo:
            out = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout
            children = [int(p) for p in out.split()]
            found += children
            todo += children
        return found

    def kill_sessions(self) -> list[int]:
        pids = self.sessions()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.kill_sessions()
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
