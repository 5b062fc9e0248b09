"""Docker tier: the real engine and the stand-in image. In CI (HOSTCTL_REQUIRE_DOCKER=1) a missing engine or
image fails these tests instead of skipping them."""

from __future__ import annotations

import pytest
from docker_helpers import engine_fixtures, hostctl_containers, tier_unavailable

_unavailable = tier_unavailable("Docker", "HOSTCTL_REQUIRE_DOCKER")
docker_client, stand_in_image = engine_fixtures(_unavailable)


@pytest.fixture(autouse=True)
def no_leftover_containers(request, docker_client):
    """Every Docker test must leave no hostctl container behind (kept ones are the test's to remove)."""
    before = {c.id for c in hostctl_containers(docker_client)}
    yield
    left = [c for c in hostctl_containers(docker_client) if c.id not in before]
    for container in left:
        container.remove(force=True)
    assert not left, f"{len(left)} hostctl container(s) left behind: {[c.labels for c in left]}"
