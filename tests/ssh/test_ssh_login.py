"""The early ssh login (hostctl/ssh_login.py): which command lines start it, where it reads the engine from, and
that the connections after it join it instead of logging in again."""

from __future__ import annotations

import os
import subprocess

import pytest

from hostctl import ssh_login


@pytest.mark.parametrize("argv,env,wanted", [
    (["quantize", "--input-dir", "in"], {}, True),  # quantize runs in the image by default
    (["quantize", "--runtime", "local"], {}, False),
    (["quantize", "--runtime=local"], {}, False),
    (["quantize"], {"HOSTCTL_RUNTIME": "local"}, False),
    (["quantize", "--runtime", "docker"], {"HOSTCTL_RUNTIME": "local"}, True),  # the option wins
    (["quantize", "--help"], {}, False),
    (["quantize", "--print-docker-cmd"], {}, False),
    (["inspect", "--board", "kv260"], {}, False),  # inspect runs locally by default
    (["inspect", "--runtime", "docker"], {}, True),
    (["inspect"], {"HOSTCTL_INSPECT_RUNTIME": "docker"}, True),
    (["inspect", "--runtime", "docker", "--list-targets"], {}, False),
    (["demo"], {}, False),
    (["demo", "--runtime", "docker"], {}, True),
    (["compile", "--board", "kv260"], {}, True),
    (["doctor"], {}, True),
    (["clean"], {}, True),
    (["evaluate"], {}, False),
    ([], {}, False),
])
def test_which_command_lines_log_in_early(monkeypatch, argv, env, wanted):
    for name in ("HOSTCTL_RUNTIME", "HOSTCTL_INSPECT_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ssh_login.uses_engine(argv) is wanted


@pytest.mark.docker
def test_the_endpoint_is_read_as_the_docker_cli_writes_contexts(tmp_path, monkeypatch, docker_client):
    """The real docker CLI writes the contexts; ssh_login reads them without the SDK (it runs before its import)."""
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path))
    env.pop("DOCKER_HOST", None)
    for command in (["create", "far", "--docker", "host=ssh://builder@build-server:2222"],
                    ["create", "near", "--docker", "host=ssh://near-server"], ["use", "far"]):
        done = subprocess.run(["docker", "context", *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    assert ssh_login.endpoint() == "ssh://builder@build-server:2222"
    monkeypatch.setenv("DOCKER_CONTEXT", "near")
    assert ssh_login.endpoint() == "ssh://near-server"
    monkeypatch.setenv("DOCKER_HOST", "ssh://first@host")
    assert ssh_login.endpoint() == "ssh://first@host"
    monkeypatch.setenv("DOCKER_HOST", "")  # empty counts as unset, as for the docker CLI
    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert ssh_login.endpoint() is None


def _logins(server) -> int:
    return server.log.read_text().count("Accepted publickey")


@pytest.mark.docker
def test_connections_join_the_early_login(monkeypatch, own_sshd):
    """The entry point's login is the one login: the client's connections are sessions on its master."""
    from hostctl.runtime.docker.engine import connect

    for name, value in own_sshd.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ssh_login, "_early", None)
    monkeypatch.setattr(ssh_login, "_control_dir", None)  # a master of this test's own
    ssh_login.start(["doctor"])
    early = ssh_login.early_login()
    assert early is not None
    assert early.wait(timeout=30) == 0  # logged in, and gone to the background as the master
    control = ssh_login._control_dir
    assert control is not None and len(os.listdir(control)) == 1  # the master's socket
    client = connect()
    try:
        for _ in range(3):
            assert client.ping()
        client.containers.list()
    finally:
        client.close()
    assert _logins(own_sshd) == 1
    subprocess.run(["ssh", *ssh_login.control_options(), "-O", "exit", *ssh_login.destination(own_sshd.url)],
                   capture_output=True, timeout=30)

