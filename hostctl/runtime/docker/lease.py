"""The host's side of the payload's lease (container_payload/lease.py): a heartbeat through the engine.

On a remote engine, every few seconds the host rewrites a small file in the running container with put_archive,
a request that needs the link. The payload exits when the file stops changing, so a container whose host vanished
stops by itself instead of running on; the next run or `hostctl clean` removes it. A heartbeat that cannot get
through because ssh died (or the engine stays unreachable) tells the run that the link is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests.exceptions

from container_payload.lease import LEASE_ENV, LEASE_SECONDS_ENV
from hostctl.errors import RunFailed
from hostctl.runtime.docker.files import one_file_archive
from hostctl.runtime.docker.ssh import ssh_failure

LEASE_FILE = "/hostctl/lease"
LEASE_SECONDS = 30  # the payload exits this long after the last heartbeat it saw
BEAT_EVERY = 5.0
LOST_AFTER = 20.0  # heartbeats failing this long (no ssh to say so at once, e.g. tcp://) mean the link is gone


class LinkLost(RunFailed):
    """The connection to a remote engine dropped during a run (exit 1: the run failed, the machine is fine)."""


def lease_environment() -> dict[str, str]:
    return {LEASE_ENV: LEASE_FILE, LEASE_SECONDS_ENV: str(LEASE_SECONDS)}


def link_lost(where: str, cause: BaseException) -> LinkLost:
    failure = ssh_failure(cause)
    said = f" (ssh: {failure.last_line.removeprefix('ssh: ')})" if failure is not None and failure.last_line else ""
    return LinkLost(f"lost the connection to the Docker engine at {where} during the run{said}; earlier results "
                    "are intact",
                    f"The container stops by itself within {LEASE_SECONDS} s of the last heartbeat; `hostctl clean` "
                    "removes it once the engine answers again.")


def is_link_failure(exc: BaseException) -> bool:
    return ssh_failure(exc) is not None or isinstance(exc, requests.exceptions.ConnectionError)


class Heartbeat:
    """Beats while the container runs; calls `on_lost(exception)` once if the link is gone."""

    def __init__(self, container: Any, on_lost: Callable[[BaseException], LinkLost]) -> None:
        self.container = container
        self.on_lost = on_lost
        self.lost: LinkLost | None = None
        self.counter = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.counter += 1
        self.container.put_archive("/", one_file_archive(LEASE_FILE.lstrip("/"), str(self.counter).encode()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hostctl-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The first beat at once (the payload's watch counts from the first content it sees), then every
        BEAT_EVERY seconds."""
        failing_since: float | None = None
        while True:
            try:
                self.beat()
                failing_since = None
            except Exception as exc:  # noqa: BLE001 - judged below; the run itself decides what to do
                if self._stop.is_set():
                    return
                if is_link_failure(exc):  # anything else, e.g. the container just exited: the run's wait sees it
                    failing_since = failing_since or time.monotonic()
                    if ssh_failure(exc) is not None or time.monotonic() - failing_since > LOST_AFTER:
                        self.lost = self.on_lost(exc)
                        return
            if self._stop.wait(BEAT_EVERY):
                return

    def stop(self) -> None:
        self._stop.set()
