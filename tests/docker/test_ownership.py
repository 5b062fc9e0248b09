"""Files the container writes on the host belong to the calling user, not to root."""

from __future__ import annotations

import grp
import os

import pytest
from docker_helpers import caller, run_as
from helpers import make_inputs, tiny_args, tiny_unet

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("files", ["bind", "copy"])
def test_outputs_are_owned_by_a_non_root_caller(stand_in_image, files):
    socket_group = grp.getgrgid(os.stat("/var/run/docker.sock").st_gid).gr_name if os.getuid() == 0 else None
    with caller([socket_group] if socket_group else []) as (uid, gid, home):
        if os.getuid() == 0:
            for path in (home,):
                os.chown(path, uid, gid)
        inputs = make_inputs(home / "in", tiny_unet())
        for path in [home / "in", *(home / "in").iterdir()]:
            os.chown(path, uid, gid)
        out = home / "results"
        args = tiny_args(inputs, out, "--quantizer", "portable", "--image", stand_in_image, "--pull", "never")
        args[args.index("--runtime") + 1] = "docker"
        proc = run_as(uid, gid, home, args, HOSTCTL_DOCKER_FILES=files)
        assert proc.returncode == 0, proc.stderr
        owners = {str(p.relative_to(out)): (p.stat().st_uid, p.stat().st_gid) for p in [out, *out.rglob("*")]}
        print(f"caller {uid}:{gid}; {len(owners)} paths in the output dir; owners: {sorted(set(owners.values()))}")
        assert set(owners.values()) == {(uid, gid)}, owners
        assert {"quant_info.json", "quantization_test_preds.h5", "run.log"} <= set(owners)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a user outside the docker group")
def test_socket_permission_denied_is_one_line_and_exit_3(stand_in_image):
    with caller([]) as (uid, gid, home):
        inputs = make_inputs(home / "in", tiny_unet())
        for path in [home, home / "in", *(home / "in").iterdir()]:
            os.chown(path, uid, gid)
        args = tiny_args(inputs, home / "out", "--image", stand_in_image)
        args[args.index("--runtime") + 1] = "docker"
        proc = run_as(uid, gid, home, args)
        assert proc.returncode == 3, proc.stderr
        assert "permission denied on the Docker socket" in proc.stderr and "usermod -aG docker" in proc.stderr
        assert "Traceback" not in proc.stderr
