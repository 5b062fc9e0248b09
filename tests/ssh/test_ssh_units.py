"""The pieces of the ssh:// path that need no server: the ssh command line, the lease's watchdog, the messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from helpers import source_path

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


def test_files_arriving_hold_the_lease_while_the_payload_waits_for_them(tmp_path, monkeypatch):
    """The engine locks a container while an archive goes into it, so the heartbeat waits out a long copy: while
    the payload waits for its files, bytes arriving count as beats; when they stop too, the lease ends."""
    monkeypatch.setattr(lease, "CHECK_EVERY", 0.1)
    monkeypatch.setenv(lease.READY_ENV, str(tmp_path / "ready"))
    (tmp_path / "inputs").mkdir()
    ended: list[float] = []
    waiter = threading.Thread(target=lease.wait_until_ready, daemon=True)
    waiter.start()
    watcher = threading.Thread(target=lease.watch, args=(str(tmp_path / "lease"), 1.0, ended.append), daemon=True)
    watcher.start()
    with open(tmp_path / "inputs" / "samples.h5", "wb") as f:
        for _ in range(25):  # 2.5 s of a copy growing a file, and no heartbeat at all: the lease holds
            f.write(b"\0" * 4096)
            f.flush()
            time.sleep(0.1)
    assert not ended
    stopped = time.monotonic()
    watcher.join(timeout=5)  # the copy stalled (the host is gone): the lease ends the wait
    assert ended == [lease.EXIT_LEASE_LOST]
    assert 0.9 < time.monotonic() - stopped < 2.5
    assert waiter.is_alive()  # still waiting: in the payload, the lease's exit ends the process
    (tmp_path / "ready").touch()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and lease._arriving == []


def _payload(tmp_path, ready, seconds: str = "30") -> subprocess.Popen:
    """The payload as a container starts it on a remote engine, on a compile job (no torch: quick to start)."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"task": "compile"}))
    env = dict(os.environ, HOSTCTL_READY=str(ready), HOSTCTL_LEASE=str(tmp_path / "lease"),
               HOSTCTL_LEASE_SECONDS=seconds, PYTHONPATH=source_path(os.environ.get("PYTHONPATH")))
    return subprocess.Popen([sys.executable, "-m", "container_payload", "--job", str(job)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_payload_waits_for_its_go_ahead(tmp_path):
    """Started before its inputs are in, the payload reads nothing until the host's go-ahead file appears."""
    ready = tmp_path / "ready"
    proc = _payload(tmp_path, ready)
    time.sleep(1.5)
    assert proc.poll() is None  # waiting: it has not read its job's inputs, or failed on them
    ready.touch()
    out, err = proc.communicate(timeout=60)
    assert "the payload started before its files were in and waited 1." in out, out + err
    assert "job has schema version None" in out  # then it read the job (a bad one) and said so
    assert out.index("and waited") < out.index("job has schema version")


def test_a_payload_whose_host_is_gone_stops_waiting(tmp_path):
    """No go-ahead and no heartbeat: the lease ends the wait (exit 75), as it ends a run."""
    proc = _payload(tmp_path, tmp_path / "never", seconds="1")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == lease.EXIT_LEASE_LOST, out + err
    assert "no heartbeat from the host" in err
    assert "waited" not in out
