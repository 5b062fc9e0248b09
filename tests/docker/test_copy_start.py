"""The payload started before its files are in (copied files: hostctl/runtime/docker/container.py), against the
real engine, which locks a container while an archive goes into it: the host's heartbeat (a write into the same
container) waits until a long copy ends, and the copy must not cost the payload its lease."""

from __future__ import annotations

import os
import tarfile
import time

import pytest

from container_payload.lease import LEASE_ENV, LEASE_SECONDS_ENV, READY_ENV, TASK_ENV
from hostctl.options import DEFAULT_CONDA_ENV
from hostctl.runtime.docker.files import Share, copy_in
from hostctl.runtime.docker.labels import run_labels
from hostctl.runtime.docker.shim import (
    IN_CODE,
    IN_RUN,
    PAYLOAD_COMMAND,
    PAYLOAD_DIR,
    READY_FILE,
    payload_environment,
    shim,
)

pytestmark = pytest.mark.docker

CHUNK = 1 << 20


def slow_archive(name: str, chunks: int, pause: float):
    """A tar stream of one file of `chunks` MB, a chunk every `pause` seconds."""
    info = tarfile.TarInfo(name)
    info.size, info.uid, info.gid = chunks * CHUNK, os.getuid(), os.getgid()
    yield info.tobuf()
    for _ in range(chunks):
        yield b"\0" * CHUNK
        time.sleep(pause)
    yield b"\0" * 1024  # the end of the archive


def test_a_copy_longer_than_the_lease_does_not_end_the_waiting_payload(tmp_path, docker_client, stand_in_image):
    env = payload_environment(str(os.getuid()), str(os.getgid()), DEFAULT_CONDA_ENV)
    env.update({LEASE_ENV: "/hostctl/lease", LEASE_SECONDS_ENV: "2", READY_ENV: READY_FILE, TASK_ENV: "compile"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text('{"task": "compile"}')
    container = docker_client.containers.create(
        stand_in_image, command=shim(PAYLOAD_COMMAND), entrypoint=[], user="root", working_dir=IN_RUN,
        environment=env, labels=run_labels("copy-start-test", "payload", False), init=True, network_mode="none")
    try:
        copy_in(container, [Share(PAYLOAD_DIR, f"{IN_CODE}/container_payload", False)])
        container.start()
        # 6 s of copying (three times the lease) and no heartbeat: the bytes arriving keep the payload waiting
        started = time.monotonic()
        assert container.put_archive("/", slow_archive("hostctl/inputs/samples.h5", 60, 0.1))
        took = time.monotonic() - started
        copy_in(container, [Share(run_dir, IN_RUN, True)], last=[(READY_FILE, b"")])
        code = container.wait(timeout=60)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    print(f"copy {took:.1f} s, exit {code}\n{logs[-800:]}")
    assert took > 4
    assert "no heartbeat" not in logs
    assert "the payload started before its files were in and waited" in logs
    assert "job has schema version None" in logs  # it went on to read its (bad) job, after the files were in
    assert code == 2
