"""Pulling through the streaming API, against a real registry on loopback (Debian's docker-registry)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from hostctl.errors import EnvironmentProblem
from hostctl.runtime import docker as rt
from hostctl.ui import Reporter

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("Debian's docker-registry is not installed (scripts/test.sh installs it as root)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("docker-registry did not start")
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def _tiny_image(client, tag: str) -> None:
    """A one-layer image of a few random kilobytes, imported from a tar made here."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = os.urandom(256 * 1024)
        info = tarfile.TarInfo("data.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repository, tag=version)


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.updates: list[tuple[str, float | None, float | None]] = []

    def update_task(self, key, *, done=None, advance=None, total=None) -> None:
        self.updates.append((key, done, total))
        super().update_task(key, done=done, advance=advance, total=total)


def test_missing_image_is_pulled_with_per_layer_progress(registry, docker_client):
    tag = f"{registry}/hostctl-pull-test:1"
    _tiny_image(docker_client, tag)
    for line in docker_client.images.push(tag, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(tag, force=True)
    reporter = RecordingReporter()
    try:
        image = rt.ensure_image(docker_client, tag, "missing", reporter)
        assert tag in image.tags
        layers = {key for key, _, _ in reporter.updates}
        assert layers and all(key.startswith("pull:") for key in layers)
        finals = {key: (done, total) for key, done, total in reporter.updates}
        assert all(done == total for done, total in finals.values()), finals
        # Present now: --pull missing does not pull again.
        reporter.updates.clear()
        rt.ensure_image(docker_client, tag, "missing", reporter)
        assert reporter.updates == []
    finally:
        docker_client.images.remove(tag, force=True)


def test_pull_of_an_unknown_tag_fails_with_the_registry_error(registry, docker_client):
    with pytest.raises(EnvironmentProblem, match=f"pulling {registry}/hostctl-nothing:9 failed"):
        rt.ensure_image(docker_client, f"{registry}/hostctl-nothing:9", "missing", Reporter(quiet=True))


def test_pull_never_with_a_missing_image(docker_client):
    with pytest.raises(EnvironmentProblem, match="--pull never forbids pulling it"):
        rt.ensure_image(docker_client, "hostctl-absent:0", "never", Reporter(quiet=True))


