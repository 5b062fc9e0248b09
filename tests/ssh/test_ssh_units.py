"""The pieces of the ssh:// path that need no server: the ssh command line, the lease's watchdog, the messages."""

from __future__ import annotations

import threading
import time

import pytest

from container_payload import lease
from hostctl.runtime.docker.engine import ssh_problem
from hostctl.runtime.docker.ssh import SSH_OPTIONS, SshFailure, SshMissing, control_options, ssh_command


@pytest.mark.parametrize("url,expected", [
    ("ssh://build-server", ["--", "build-server"]),
    ("ssh://builder@build-server", ["-l", "builder", "--", "build-server"]),
    ("ssh://builder@10.0.0.5:2222", ["-l", "builder", "-p", "2222", "--", "10.0.0.5"]),
    ("ssh://builder@[::1]:2222", ["-l", "builder", "-p", "2222", "--", "::1"]),
])
def test_ssh_command_line(url, expected):
    assert ssh_command(url) == ["ssh", *SSH_OPTIONS, *control_options(), *expected, "docker system dial-stdio"]
    assert "BatchMode=yes" in SSH_OPTIONS and not any("StrictHostKeyChecking" in o for o in SSH_OPTIONS)


URL = "ssh://builder@build-server:2222"


@pytest.mark.parametrize("code,line,wanted", [
    (255, "builder@build-server: Permission denied (publickey).", "ssh-add"),
    (255, "Host key verification failed.", "ssh -p 2222 builder@build-server true"),
    (255, "ssh: connect to host build-server port 2222: Connection refused", "port 2222"),
    (255, "ssh: Could not resolve hostname build-server: Name or service not known", "docker context ls"),
    (255, "ssh: connect to host build-server port 2222: Connection timed out", "firewall"),
    (127, "bash: line 1: docker: command not found", "install it"),
])
def test_ssh_failures_are_one_line_with_a_fix(code, line, wanted):
    problem = ssh_problem(SshFailure(URL, code, line))
    assert problem.exit_code == 3
    assert problem.message == (f"cannot reach the Docker engine at {URL}: ssh: {line.removeprefix('ssh: ')} "
                               f"(ssh exit status {code})")
    assert wanted in (problem.hint or "")
    assert "\n" not in str(problem)


def test_missing_ssh_names_the_package():
    problem = ssh_problem(SshMissing(URL))
    assert "no `ssh` command on PATH" in problem.message and "openssh-client" in (problem.hint or "")


def test_the_lease_holds_while_the_heartbeat_changes_and_ends_when_it_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "CHECK_EVERY", 0.1)
    beat = tmp_path / "lease"
    beat.write_text("0")
    ended: list[float] = []
    watcher = threading.Thread(target=lease.watch, args=(str(beat), 1.0, lambda code: ended.append(code)),
                               daemon=True)
    watcher.start()
    for n in range(1, 20):  # 2 s of heartbeats every 0.1 s: longer than the lease, and it holds
        beat.write_text(str(n))
        time.sleep(0.1)
    assert not ended
    stopped = time.monotonic()
    watcher.join(timeout=5)
    assert ended == [lease.EXIT_LEASE_LOST]
    assert 0.9 < time.monotonic() - stopped < 2.5
