"""The image: present, pulled per --pull with a progress bar per layer, and runnable on this host's platform."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hostctl.errors import EnvironmentProblem
from hostctl.ui import Reporter

PULL_HINT = "Check the image name, your network and `docker login`."


def split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        return image, ""
    repo, _, tag = image.rpartition(":")
    if not repo or "/" in tag:
        return image, "latest"
    return repo, tag


def ensure_image(client: docker.DockerClient, image: str, pull: str, reporter: Reporter) -> Any:
    present = None
    try:
        present = client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise EnvironmentProblem(f"cannot inspect image {image}: {exc.explanation}") from exc
    if present is not None and pull != "always":
        return present
    if pull == "never":
        raise EnvironmentProblem(f"image {image} is not on this machine and --pull never forbids pulling it",
                                 f"Pull it (docker pull {image}) or load it (docker load -i FILE), or drop "
                                 "--pull never.")
    _pull(client, image, reporter)
    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise EnvironmentProblem(f"pulled {image} but the engine does not list it") from exc


def _pull(client: docker.DockerClient, image: str, reporter: Reporter) -> None:
    """Pull with one progress bar per layer; progressDetail may be empty, and errors arrive as events."""
    repo, tag = split_image(image)
    reporter.info(f"pulling {image} (the Vitis AI images are 11-17 GB; this happens once)")
    try:
        for event in client.api.pull(repo, tag or None, stream=True, decode=True):
            if "error" in event:
                raise EnvironmentProblem(f"pulling {image} failed: {event['error']}",
                                         PULL_HINT)
            layer, detail, status = event.get("id"), event.get("progressDetail") or {}, event.get("status", "")
            if not layer or ":" in layer:
                continue  # tag/digest lines, not layers
            key = f"pull:{layer}"
            if detail.get("total"):
                verb = "extracting" if status.startswith("Extracting") else "downloading"
                reporter.update_task(key, done=detail.get("current", 0), total=detail["total"])
                reporter.describe_task(key, f"{verb} {layer}")
            elif status in ("Pull complete", "Already exists", "Download complete"):
                reporter.start_task(key, 1, f"{status.lower()} {layer}", unit="B")
                reporter.update_task(key, done=1, total=1)
    except docker.errors.APIError as exc:
        raise EnvironmentProblem(f"pulling {image} failed: {exc.explanation or exc}",
                                 PULL_HINT) from exc
    finally:
        reporter.close()


def check_platform(image: Any) -> None:
    arch = image.attrs.get("Architecture", "")
    host = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    if arch and arch != host and not _emulates(arch):
        raise EnvironmentProblem(f"image {image.tags[0] if image.tags else image.short_id} is built for {arch} and "
                                 f"this host is {host} without emulation for it",
                                 "Run on an amd64 machine, or install binfmt emulation "
                                 "(docker run --privileged --rm tonistiigi/binfmt --install all).")


def _emulates(arch: str) -> bool:
    names = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}
    return Path("/proc/sys/fs/binfmt_misc", names.get(arch, f"qemu-{arch}")).exists()
