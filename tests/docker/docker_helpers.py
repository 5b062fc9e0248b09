"""Helpers shared by the Docker tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import FAKE_NNDCT, USER_MODELS, source_path


def tier_unavailable(tier: str, *required: str) -> Callable[[str], None]:
    """What a tier's tests do when what they need cannot run: skip, or fail where one of the `required` variables
    is 1 (CI sets them: a green run must have run them)."""
    def unavailable(reason: str) -> None:
        if any(os.environ.get(name) == "1" for name in required):
            pytest.fail(f"{tier} tests are required here but cannot run: {reason}", pytrace=False)
        pytest.skip(reason)

    return unavailable


def engine_fixtures(unavailable: Callable[[str], None]):
    """The session fixtures docker_client and stand_in_image, for a tier's conftest (docker, ssh)."""
    @pytest.fixture(scope="session")
    def docker_client():
        return engine_client(unavailable)

    @pytest.fixture(scope="session")
    def stand_in_image(docker_client) -> str:
        return stand_in_image_name(docker_client, unavailable)

    return docker_client, stand_in_image


def engine_client(unavailable):
    """A client of the engine the tests use; unavailable(reason) skips or fails when there is none."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        unavailable(f"no Docker engine ({exc}); run scripts/docker-engine.sh start")
    return client


def stand_in_image_name(client, unavailable) -> str:
    """$HOSTCTL_TEST_IMAGE, or the stand-in image scripts/build-stand-in-image.sh builds or finds."""
    image = os.environ.get("HOSTCTL_TEST_IMAGE")
    if not image:
        root = Path(__file__).resolve().parents[2]
        proc = subprocess.run([str(root / "scripts" / "build-stand-in-image.sh")], capture_output=True, text=True)
        if proc.returncode != 0:
            unavailable(f"cannot build the stand-in image: {proc.stderr.strip().splitlines()[-1:]}")
        image = proc.stdout.strip().splitlines()[-1]
    client.images.get(image)
    return image


def hostctl_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": "hostctl.run"})


def user_model(name: str, **kwargs):
    sys.path.insert(0, str(USER_MODELS))
    try:
        import misbehaving
    finally:
        sys.path.remove(str(USER_MODELS))
    return getattr(misbehaving, name)(**kwargs)


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
    env["PYTHONPATH"] = source_path(env.get("PYTHONPATH"))
    env.pop("XDG_CACHE_HOME", None)
    env.pop("HOSTCTL_CACHE_DIR", None)
    return subprocess.run([*prefix, sys.executable, "-m", "hostctl", *args], cwd=home, env=env, text=True,
                          capture_output=True, timeout=600)


def fake_nndct_requirements(directory: Path) -> Path:
    """A requirements file that installs the fake pytorch_nndct (tests/fake_nndct) from a local wheel, offline."""
    src = directory / "fake_src"
    shutil.copytree(FAKE_NNDCT / "pytorch_nndct", src / "pytorch_nndct")
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        '"setuptools.build_meta"\n[project]\nname = "fake-nndct-for-tests"\n'
                                        'version = "3.5.0"\n[tool.setuptools]\npackages = ["pytorch_nndct"]\n')
    wheels = directory / "req" / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(src)], check=True)
    requirements = directory / "req" / "requirements.txt"
    requirements.write_text("--no-index\n--find-links wheels\nfake-nndct-for-tests==3.5.0\n")
    return requirements
