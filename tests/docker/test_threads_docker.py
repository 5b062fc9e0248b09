"""The payload container's CPUs and threads (issue 25): --cpus becomes the engine's CPU quota, the threads follow
it, and the payload waits passively; what was used is in run.json."""

from __future__ import annotations

import json

import pytest
from helpers import run_hostctl, tiny_args

pytestmark = pytest.mark.docker


def _docker(inputs, out, image, *extra):
    args = tiny_args(inputs, out, "--quantizer", "portable", "--image", image, "--pull", "never", "--no-evaluate",
                     *extra)
    args[args.index("--runtime") + 1] = "docker"
    return args


def test_cpus_and_threads_reach_the_payload(tmp_path, unet_inputs, stand_in_image, docker_client):
    out = tmp_path / "out"
    proc = run_hostctl(_docker(unet_inputs, out, stand_in_image, "--cpus", "1", "--keep-container"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["runtime"]["cpus"] == 1.0 and manifest["runtime"]["threads"]["threads"] == 1
    # what the payload ran with: one torch thread (Debian's torch heeds only set_num_threads), waiting passively
    assert manifest["payload"]["versions"]["torch_threads"] == "1"
    assert manifest["payload"]["versions"]["omp_wait_policy"] == "PASSIVE"
    run_name = manifest["run_id"] if "run_id" in manifest else None
    kept = [c for c in docker_client.containers.list(all=True, filters={"label": "hostctl.keep=1"})
            if run_name is None or run_name in c.labels.get("hostctl.run", "")]
    try:
        assert kept, "--keep-container keeps the payload's container"
        assert kept[0].attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    finally:
        for c in kept:
            c.remove(force=True)


def test_threads_option_is_used_as_given(tmp_path, unet_inputs, stand_in_image):
    out = tmp_path / "out"
    proc = run_hostctl(_docker(unet_inputs, out, stand_in_image, "--threads", "2"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["payload"]["versions"]["torch_threads"] == "2"
    assert manifest["runtime"]["threads"]["why"] == "--threads"
