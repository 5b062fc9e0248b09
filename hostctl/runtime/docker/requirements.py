"""--requirements: screened, pip-installed with --user into a host cache keyed by image, env and file.

The conda env belongs to the image's original uid, so a remapped user cannot install into it (issue #1287);
`pip install --user` with PYTHONUSERBASE on a cache directory works, and a second run with the same image, env
and requirements finds the cache complete and installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import docker

from hostctl.cache import cache_root
from hostctl.errors import RunFailed, UsageError
from hostctl.runtime.docker.container import ContainerRunner
from hostctl.runtime.docker.files import Share
from hostctl.runtime.docker.shim import IN_REQ, IN_USERBASE, shim
from hostctl.ui import Reporter

PROTECTED_PACKAGES = {"torch", "torchvision", "torchaudio", "pytorch-nndct", "pytorch_nndct"}


def check_requirements(path: Path) -> str:
    """The file's text; refuses lines that would replace the image's torch (nndct exits on a torch mismatch)."""
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0].lower().replace("_", "-")
        if name in {p.replace("_", "-") for p in PROTECTED_PACKAGES}:
            raise UsageError(f"{path}:{number}: '{raw.strip()}' would replace the image's {name}, and "
                             "pytorch_nndct refuses to run with a torch other than its own",
                             "Remove that line; the Vitis AI env already has torch.")
    return text


def requirements_cache(image_id: str, text: str, env: str) -> Path:
    key = hashlib.sha256(f"{image_id}\n{env}\n{text}".encode()).hexdigest()[:16]
    return cache_root() / "requirements" / key


def stale_caches(client: docker.DockerClient | None) -> list[Path]:
    """Requirement caches of images no longer on the engine, and half-written ones (never completed)."""
    root = cache_root() / "requirements"
    if not root.is_dir():
        return []
    present = {image.id for image in client.images.list()} if client is not None else None
    stale = []
    for entry in sorted(root.iterdir()):
        marker = entry / ".complete"
        if not marker.is_file():
            stale.append(entry)
            continue
        try:
            image_id = json.loads(marker.read_text(encoding="utf-8")).get("image_id")
        except ValueError:
            image_id = None
        if present is not None and image_id not in present:
            stale.append(entry)
    return stale


def install_requirements(runner: ContainerRunner, requirements: Path, text: str, conda_env: str,
                         environment: dict[str, str], reporter: Reporter) -> Path:
    """pip install --user into a host cache keyed by image id + env + requirements; a hit installs nothing."""
    image_id = runner.image.id
    cache = requirements_cache(image_id, text, conda_env)
    marker = cache / ".complete"
    if marker.is_file():
        reporter.info(f"requirements: using the cache in {cache}")
        return cache
    staging = cache.with_name(cache.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    req = requirements.resolve()
    shares = [Share(staging, IN_USERBASE, True), Share(req.parent, IN_REQ, False)]
    environment = dict(environment, PYTHONUSERBASE=IN_USERBASE, PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = shim(["python", "-m", "pip", "install", "--user", "--no-warn-script-location",
                    "-r", f"{IN_REQ}/{req.name}"])
    reporter.info(f"requirements: installing {req.name} into {cache}")
    log: list[str] = []

    def on_line(stream: str, line: str) -> None:
        log.append(line)
        reporter.log(line, stream)

    try:
        code = runner.run(command, shares, environment, "requirements", network=True, on_line=on_line,
                          workdir=IN_REQ)
        if code != 0:
            raise RunFailed(f"pip install -r {req.name} failed in the image (exit {code})",
                            "Last lines:\n  " + "\n  ".join(log[-10:]))
        (staging / ".complete").write_text(json.dumps({"image_id": image_id, "conda_env": conda_env,
                                                       "requirements": text}), encoding="utf-8")
        if cache.exists():
            shutil.rmtree(cache)
        staging.rename(cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache
