"""What `hostctl doctor` reports about the engine and the image, and what `hostctl clean` removes."""

from __future__ import annotations

import shutil
import statistics
import time
from typing import Any

import docker.errors
import requests.exceptions

from hostctl.errors import EnvironmentProblem
from hostctl.runtime.docker.engine import connect, engine_url, is_local_engine
from hostctl.runtime.docker.images import check_platform
from hostctl.runtime.docker.inputs import kept_volumes, remove_unused
from hostctl.runtime.docker.labels import LABEL_RUN, orphans, run_labels
from hostctl.runtime.docker.requirements import stale_caches


def engine_facts(image: str) -> dict[str, Any]:
    """What `hostctl doctor` reports about the engine and the image; raises EnvironmentProblem if unreachable."""
    client = connect()
    version = client.version()
    rtt = []
    for _ in range(3):
        started = time.perf_counter()
        client.ping()
        rtt.append(time.perf_counter() - started)
    facts: dict[str, Any] = {"url": engine_url(), "local": is_local_engine(client),
                             "rtt_ms": round(statistics.median(rtt) * 1000, 1),
                             "version": version.get("Version"), "api_version": version.get("ApiVersion"),
                             "os_arch": f"{version.get('Os')}/{version.get('Arch')}", "image": None,
                             "image_arch": None, "leftovers": len(orphans(client, include_kept=True))}
    try:
        info = client.info()
        facts.update(cpus=info.get("NCPU"), memory=info.get("MemTotal"))
    except docker.errors.APIError:
        facts.update(cpus=None, memory=None)
    try:
        found = client.images.get(image)
        facts.update(image=found.id, image_arch=found.attrs.get("Architecture"),
                     image_size=found.attrs.get("Size"))
        try:
            check_platform(found)
            facts["platform_ok"] = True
        except EnvironmentProblem as exc:
            facts["platform_ok"] = False
            facts["platform_problem"] = exc.message
    except docker.errors.ImageNotFound:
        pass
    if not facts["local"]:
        facts["engine_free"] = _engine_free(client, facts["image"]) if facts["image"] else None
    return facts


def _engine_free(client: docker.DockerClient, image_id: str) -> int | None:
    """Bytes free where the remote engine keeps images and containers: `df` in a throw-away container of the
    image (its root is an overlay on that disk); None if that fails."""
    container = None
    try:
        container = client.containers.create(image_id, command=["df", "-Pk", "/"], entrypoint=[], user="root",
                                             network_mode="none", labels=run_labels("doctor", "doctor", False))
        container.start()
        container.wait(timeout=60)
        lines = container.logs(stdout=True, stderr=False).decode(errors="replace").split("\n")
        return int(lines[1].split()[3]) * 1024
    except (docker.errors.DockerException, requests.exceptions.RequestException, IndexError, ValueError, OSError):
        return None
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                pass


def clean(dry_run: bool, include_caches: bool = True) -> dict[str, list[str]]:
    """Remove labelled containers whose owner is gone or that were kept, stale requirement caches, and the volumes
    kept on the engine (inputs.py: inputs and the payload's code) that no container uses."""
    client = connect()
    containers = orphans(client, include_kept=True)
    caches = stale_caches(client) if include_caches else []
    if not dry_run:
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        for path in caches:
            shutil.rmtree(path, ignore_errors=True)
    # after the containers: a volume an orphan held is free now
    volumes = remove_unused(client, kept_volumes(client), dry_run) if include_caches else []
    return {"containers": [f"{c.short_id} {c.labels.get(LABEL_RUN, '')}" for c in containers],
            "caches": [str(p) for p in caches], "engine volumes": volumes}
