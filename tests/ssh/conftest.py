"""ssh tier: a real sshd on loopback in front of the real engine, and the stand-in image.

These tests carry the `docker` marker (they need the engine and the image too). In CI (HOSTCTL_REQUIRE_SSH=1 or
HOSTCTL_REQUIRE_DOCKER=1, as scripts/test.sh sets) an sshd that cannot be started, or a missing engine or image,
fails them instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "docker"))

from docker_helpers import engine_fixtures, hostctl_containers, tier_unavailable  # noqa: E402 - after the path
from sshd import SshServer  # noqa: E402

_unavailable = tier_unavailable("ssh", "HOSTCTL_REQUIRE_SSH", "HOSTCTL_REQUIRE_DOCKER")
docker_client, stand_in_image = engine_fixtures(_unavailable)


def start_server(root: Path, docker_client) -> SshServer:
    """An sshd whose logins reach the same engine as the tests (SetEnv DOCKER_HOST when it is not the default)."""
    engine = os.environ.get("DOCKER_HOST", "")
    server = SshServer(root, engine if engine.startswith("unix://") else None)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        _unavailable(f"cannot start sshd: {exc}")
    return server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, docker_client):
    server = start_server(tmp_path_factory.mktemp("sshd"), docker_client)
    before = {v.name for v in docker_client.volumes.list(filters={"label": "hostctl.cache"})}
    yield server
    server.stop()
    # the volumes (inputs, payload code) this tier's remote runs left on the engine (hostctl/runtime/docker/inputs.py)
    for volume in docker_client.volumes.list(filters={"label": "hostctl.cache"}):
        if volume.name not in before:
            volume.remove(force=True)


@pytest.fixture
def own_sshd(tmp_path, docker_client):
    """An sshd for one test that may kill it."""
    server = start_server(tmp_path / "sshd", docker_client)
    yield server
    server.stop()


def ours(containers: list) -> list:
    """This tier's containers: its runs write into directories named ssh-* (the run label is the staging
    directory's name), so other sessions' containers on the same engine are never judged here."""
    return [c for c in containers if "ssh-" in (c.labels or {}).get("hostctl.run", "")]


@pytest.fixture(autouse=True)
def no_leftover_containers(request):
    """Every Docker test must leave no hostctl container behind (the unmarked ones need no engine)."""
    if request.node.get_closest_marker("docker") is None:
        yield
        return
    docker_client = request.getfixturevalue("docker_client")
    before = {c.id for c in hostctl_containers(docker_client)}
    yield
    left = [c for c in ours(hostctl_containers(docker_client)) if c.id not in before]
    for container in left:
        container.remove(force=True)
    assert not left, f"{len(left)} hostctl container(s) left behind: {[c.labels for c in left]}"
