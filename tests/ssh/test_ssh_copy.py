"""Copy mode over ssh://: inputs streamed into the container (bounded memory, progress), a full disk said so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from helpers import ROOT, source_path

pytestmark = pytest.mark.docker

# Runs in its own process so that its peak memory is hostctl's alone, not the test runner's.
COPY_SCRIPT = textwrap.dedent("""
    import io, json, sys, time
    from pathlib import Path
    from hostctl.errors import HostctlError
    from hostctl.runtime.docker.engine import connect
    from hostctl.runtime.docker.files import Share, copy_in
    from hostctl.runtime.docker.labels import run_labels
    from hostctl.ui import Reporter

    image, source, volume = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    client = connect()
    volumes = {volume: {"bind": "/hostctl/inputs", "mode": "rw"}} if volume else None
    container = client.containers.create(image, command=["true"], entrypoint=[], network_mode="none",
                                         labels=run_labels("ssh-copy-test", "payload", False), volumes=volumes)
    shown = io.StringIO()
    result = {}
    try:
        started = time.monotonic()
        copy_in(container, [Share(source, "/hostctl/inputs", False)], Reporter(stream=shown))
        result["seconds"] = time.monotonic() - started
        result["size_inside"] = container.get_archive("/hostctl/inputs/" + next(source.iterdir()).name)[1]["size"]
    except HostctlError as exc:
        result["error"] = str(exc)
        result["exit_code"] = exc.exit_code
    finally:
        container.remove(force=True)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking process (here, the test runner).
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    result["max_rss_mb"] = int(hwm.split()[1]) / 1024
    result["shown"] = shown.getvalue()
    print(json.dumps(result))
""")


def copy_over_ssh(sshd, image, source, volume=""):
    env = dict(os.environ, **sshd.client_env(), COLUMNS="100")
    env["PYTHONPATH"] = source_path(env.get("PYTHONPATH"))
    proc = subprocess.run([sys.executable, "-c", COPY_SCRIPT, image, str(source), volume], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_1gb_input_is_streamed_with_progress(tmp_path, stand_in_image, sshd):
    source = tmp_path / "inputs"
    source.mkdir()
    size = 1 << 30
    with open(source / "quantization_samples.h5", "wb") as f:
        block = os.urandom(1 << 20)  # incompressible, and not sparse: every byte is read and sent
        for _ in range(size >> 20):
            f.write(block)
    result = copy_over_ssh(sshd, stand_in_image, source)
    print(f"1 GiB over ssh: {result['seconds']:.1f} s ({size / 1e6 / result['seconds']:.0f} MB/s), "
          f"peak memory {result['max_rss_mb']:.0f} MB")
    assert result["size_inside"] == size
    assert result["max_rss_mb"] < 300
    assert "Copying inputs to the engine" in result["shown"]
    assert "1074/1074" in result["shown"] and "MB/s" in result["shown"], result["shown"]


def test_a_full_engine_disk_is_one_line(tmp_path, stand_in_image, docker_client, sshd):
    """The container's input directory on a 1 MB tmpfs volume stands for an engine whose disk is full."""
    volume = f"hostctl-test-full-{uuid.uuid4().hex[:8]}"
    docker_client.volumes.create(volume, driver="local",
                                 driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    try:
        source = tmp_path / "inputs"
        source.mkdir()
        (source / "quantization_samples.h5").write_bytes(os.urandom(4 << 20))
        result = copy_over_ssh(sshd, stand_in_image, source, volume)
    finally:
        docker_client.volumes.get(volume).remove(force=True)
    assert result["exit_code"] == 3
    assert result["error"].startswith("the Docker engine's disk is full (copying the inputs into the container)")
    assert "no space left on device" in result["error"] and "docker system prune" in result["error"]
    assert "\n" not in result["error"]
