"""The labels every hostctl container carries, and finding the containers whose hostctl process is gone.

A container is labelled with its run, the owning process (pid, its start time against pid reuse, host name)
and its role, so that even after `kill -9` the next run (or `hostctl clean`) can remove what was left.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import docker
import docker.errors

from hostctl import __version__
from hostctl.ui import Reporter

LABEL_RUN = "hostctl.run"
LABEL_PID = "hostctl.pid"
LABEL_PID_START = "hostctl.pid-start"
LABEL_HOST = "hostctl.host"
LABEL_VERSION = "hostctl.version"
LABEL_KEEP = "hostctl.keep"
LABEL_ROLE = "hostctl.role"


def run_labels(run_name: str, role: str, keep: bool) -> dict[str, str]:
    """Labels for a container of this process's run `run_name`; `keep` marks one left for debugging."""
    pid = os.getpid()
    labels = {LABEL_RUN: run_name, LABEL_PID: str(pid), LABEL_PID_START: process_start(pid),
              LABEL_HOST: socket.gethostname(), LABEL_VERSION: __version__, LABEL_ROLE: role}
    if keep:
        labels[LABEL_KEEP] = "1"
    return labels


def process_start(pid: int) -> str:
    """The kernel's start time of a process (guards against pid reuse), or '' if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""
        except PermissionError:
            return "?"
        return "?"


def owner_alive(labels: dict[str, str]) -> bool:
    if labels.get(LABEL_HOST) != socket.gethostname():
        return True  # another machine's run: not ours to judge
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    start = process_start(pid)
    return bool(start) and (start == "?" or start == labels.get(LABEL_PID_START, start))


def orphans(client: docker.DockerClient, include_kept: bool = False) -> list[Any]:
    found = []
    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        labels = container.labels or {}
        if labels.get(LABEL_KEEP) == "1" and not include_kept:
            continue
        if include_kept and labels.get(LABEL_KEEP) == "1" or not owner_alive(labels):
            found.append(container)
    return found


def sweep(client: docker.DockerClient, reporter: Reporter) -> int:
    """Remove containers left by hostctl processes that no longer exist (e.g. after kill -9)."""
    removed = 0
    for container in orphans(client):
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            reporter.warn(f"could not remove leftover container {container.short_id}: {exc.explanation}")
    if removed:
        reporter.info(f"removed {removed} container(s) left behind by earlier interrupted hostctl runs")
    return removed
