"""Docker tier: the real engine and the stand-in image. In CI (HOSTCTL_REQUIRE_DOCKER=1) a missing engine or
image fails these tests instead of skipping them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    if os.environ.get("HOSTCTL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker tests are required here but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        _unavailable(f"no Docker engine ({exc}); run scripts/docker-engine.sh start")
    return client


@pytest.fixture(scope="session")
def stand_in_image(docker_client) -> str:
    image = os.environ.get("HOSTCTL_TEST_IMAGE")
    if not image:
        proc = subprocess.run([str(ROOT / "scripts" / "build-stand-in-image.sh")], capture_output=True, text=True)
        if proc.returncode != 0:
            _unavailable(f"cannot build the stand-in image: {proc.stderr.strip().splitlines()[-1:]}")
        image = proc.stdout.strip().splitlines()[-1]
    docker_client.images.get(image)
    return image


from docker_helpers import hostctl_containers  # noqa: E402


@pytest.fixture(autouse=True)
def no_leftover_containers(request, docker_client):
    """Every Docker test must leave no hostctl container behind (kept ones are the test's to remove)."""
    before = {c.id for c in hostctl_containers(docker_client)}
    yield
    left = [c for c in hostctl_containers(docker_client) if c.id not in before]
    for container in left:
        container.remove(force=True)
    assert not left, f"{len(left)} hostctl container(s) left behind: {[c.labels for c in left]}"
