"""Files the container writes on the host belong to the calling user, not to root."""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_inputs, tiny_args, tiny_unet

pytestmark = pytest.mark.docker


@contextlib.contextmanager
def traversable(path: Path) -> Iterator[None]:
    """Let other users pass through `path` (e.g. /root holding the interpreter) for the test's duration."""
    mode = path.stat().st_mode
    if mode & stat.S_IXOTH:
        yield
        return
    path.chmod(mode | stat.S_IXOTH)
    try:
        yield
    finally:
        path.chmod(mode)


@contextlib.contextmanager
def caller(groups: list[str]) -> Iterator[tuple[int, int, Path]]:
    """A non-root caller: (uid, gid, home). As root, a fresh user; otherwise the current user."""
    if os.getuid() != 0:
        home = Path(tempfile.mkdtemp(prefix="hostctl-owner-"))
        yield os.getuid(), os.getgid(), home
        shutil.rmtree(home, ignore_errors=True)
        return
    name = f"hctl{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="hostctl-owner-"))
    extra = ["-G", ",".join(groups)] if groups else []
    subprocess.run(["useradd", "-M", "-d", str(home), "-U", *extra, name], check=True)
    try:
        import pwd

        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        interpreter_dirs = [p for p in Path(sys.executable).resolve().parents if p != Path("/")]
        with contextlib.ExitStack() as stack:
            for directory in interpreter_dirs:
                stack.enter_context(traversable(directory))
            yield entry.pw_uid, entry.pw_gid, home
    finally:
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


def run_as(uid: int, gid: int, home: Path, args: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.getuid() != 0 else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    env = dict(os.environ, HOME=str(home), COLUMNS="200", **extra_env)
    env.pop("XDG_CACHE_HOME", None)
    env.pop("HOSTCTL_CACHE_DIR", None)
    return subprocess.run([*prefix, sys.executable, "-m", "hostctl", *args], cwd=home, env=env, text=True,
                          capture_output=True, timeout=600)


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
