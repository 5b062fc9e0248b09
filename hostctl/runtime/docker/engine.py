"""Connecting to the Docker engine the docker CLI would use, and saying in one line why that failed."""

from __future__ import annotations

import os
import re

import docker
import docker.errors
import requests.exceptions

from hostctl.errors import EnvironmentProblem

# Whole commands, not a script of this repository: most users installed hostctl without cloning it.
START_ENGINE_HINT = ("Start Docker (sudo systemctl start docker; to install it on Debian/Ubuntu: sudo apt-get install "
                     "docker.io) or set DOCKER_HOST.")


def connect() -> docker.DockerClient:
    """A client for the engine the docker CLI would use (DOCKER_HOST, then the current context)."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise _engine_problem(exc) from exc
    except requests.exceptions.RequestException as exc:
        raise _engine_problem(exc) from exc


def engine_url() -> str:
    """Where the docker CLI would connect: DOCKER_HOST, else the current context's endpoint."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_current_context()
        if context is not None and context.Host:
            return context.Host if context.Name == "default" else f"{context.Host} (context {context.Name})"
    except Exception:  # noqa: BLE001 - a broken context config is reported by the connection attempt itself
        pass
    return "unix:///var/run/docker.sock"


def _engine_problem(exc: Exception) -> EnvironmentProblem:
    text = str(exc)
    where = engine_url()
    if "Permission denied" in text or "PermissionError" in text:
        return EnvironmentProblem(f"permission denied on the Docker socket of {where}",
                                  "Add yourself to the docker group (sudo usermod -aG docker $USER, then log in "
                                  "again) or use rootless Docker.")
    if "No such file" in text or "FileNotFoundError" in text:
        return EnvironmentProblem(f"no Docker engine at {where}: the socket does not exist", START_ENGINE_HINT)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return EnvironmentProblem(f"the Docker engine at {where} refused the connection",
                                  "Start the engine (sudo systemctl start docker) or fix DOCKER_HOST.")
    return EnvironmentProblem(f"cannot reach the Docker engine at {where}: {text.splitlines()[0] if text else exc}",
                              "Check `docker info`.")


def is_local_engine(client: docker.DockerClient) -> bool:
    """Whether the engine sees this machine's files (bind mounts work) or is remote (files must be copied)."""
    url = client.api.base_url
    return url.startswith(("http+docker://localhost", "http+docker://localunixsocket")) or \
        bool(re.match(r"^https?://(localhost|127\.0\.0\.1|\[::1\])[:/]", url))
