"""One container's life: create (labelled, init, root shim) -> attach -> start -> stream -> wait -> remove.

Never `containers.run()` (silent pulls, no live output) and never `auto_remove` (races with wait and logs, loses
exit codes): the container is removed in `finally`, whatever ended the run, including a signal (DESIGN.md 7).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.types import Mount

from container_payload.lease import READY_ENV
from hostctl.errors import EnvironmentProblem, RunFailed
from hostctl.runtime import LineSink
from hostctl.runtime.docker.engine import engine_url
from hostctl.runtime.docker.files import Share, copy_in, copy_out, mounts
from hostctl.runtime.docker.inputs import CachedInputs, InputVolumes
from hostctl.runtime.docker.labels import run_labels
from hostctl.runtime.docker.lease import Heartbeat, LinkLost, lease_environment, link_lost
from hostctl.runtime.docker.shim import CHECK_ENV, EXIT_INCOMPLETE, IN_RUN, READY_FILE
from hostctl.runtime.docker.ssh import ssh_failure, stream_failure
from hostctl.runtime.lines import LineSplitter
from hostctl.signals import SignalTrap
from hostctl.ui import Reporter

STOP_GRACE = 5.0
WAIT_POLL = 1.0
ENGINE_LOST_SECONDS = 30.0
LOST_CLEANUP_SECONDS = 6.0  # tries at removing the container after the link dropped, then it is the lease's job
LOST_RETRY_SECONDS = 0.5


class ContainerRunner:
    """Runs commands of one run, each in a fresh container of `image`, and returns their exit codes."""

    def __init__(self, client: docker.DockerClient, image: Any, reporter: Reporter, trap: SignalTrap,
                 run_name: str, copy_files: bool, keep_inputs: int = 0) -> None:
        self.client = client
        self.image = image
        self.reporter = reporter
        self.trap = trap
        self.run_name = run_name
        self.copy_files = copy_files
        self.keep_inputs = keep_inputs  # input volumes kept on a remote engine (inputs.py); 0: copy every time

    def run(self, command: list[str], shares: list[Share], environment: dict[str, str], role: str, *,
            network: bool, on_line: LineSink, keep: bool = False, workdir: str = IN_RUN,
            memory: str | None = None, cpus: float | None = None, waits: bool = False) -> int:
        """`waits`: the command is the payload, which can wait for READY_FILE (container_payload/lease.py): when
        files are copied, the container starts once what it needs at once is in (`Share.early`: the code), and the
        rest (the job, the inputs) follows while the payload's Python starts and imports torch, READY_FILE last."""
        container = None
        heartbeat: Heartbeat | None = None
        if self.copy_files:  # a remote engine: the payload holds a lease on this host (lease.py)
            environment = dict(environment, **lease_environment())
        late = self.copy_files and waits
        if late:
            environment = dict(environment, **{READY_ENV: READY_FILE})
        cached = [s for s in shares if s.cache] if self.copy_files and self.keep_inputs else []
        uncached = [s for s in shares if s not in cached] if self.copy_files else []
        before = [s for s in uncached if s.early or not late]  # copied in before the start
        after = [s for s in uncached if s not in before]
        inputs = CachedInputs(InputVolumes(self.client, self.reporter), cached)
        try:
            def create(volumes: list[Mount], env: dict[str, str]) -> Any:
                return self.client.containers.create(
                    self.image.id, command=command, entrypoint=[], user="root", working_dir=workdir,
                    environment=env, mounts=volumes if self.copy_files else mounts(shares),
                    labels=run_labels(self.run_name, role, keep), init=True, tty=False, stdin_open=False,
                    network_mode="bridge" if network else "none", detach=True, mem_limit=memory,
                    memswap_limit=memory, nano_cpus=int(cpus * 1e9) if cpus else None,
                )

            while True:  # a second time only when a volume found on the engine proves incomplete
                lines: queue.Queue[tuple[str, str] | BaseException | None] = queue.Queue()
                volumes = inputs.mounts()
                fill_now = [s for s in cached if s in inputs.pending and (s.early or not late)]
                fill_later = [s for s in cached if s in inputs.pending and s not in fill_now]
                checks = inputs.checks()
                container = create(volumes, dict(environment, **{CHECK_ENV: checks}) if checks else environment)
                # the attach stream's connection opens while the files go in (logs=True: nothing printed is lost)
                attached = _later(self.client.api.attach, container.id, stream=True, logs=True, demux=True)
                sent = {}
                if before or fill_now:  # a new volume's marker after its content
                    sent = copy_in(container, fill_now + before, self.reporter, last=inputs.markers(fill_now))
                    inputs.filled_in(fill_now)
                if self.copy_files:
                    heartbeat = Heartbeat(container, functools.partial(self._lost, lines=lines))
                container.start()
                if heartbeat is not None:
                    heartbeat.start()
                if late:  # the payload starts meanwhile; READY_FILE, last, lets it go on
                    sent.update(copy_in(container, fill_later + after, self.reporter,
                                        last=[*inputs.markers(fill_later), (READY_FILE, b"")]))
                    inputs.filled_in(fill_later)
                inputs.report(self.keep_inputs)
                self._pump(attached(), on_line, lines)
                code = self._wait(container, heartbeat)
                if heartbeat is not None:
                    heartbeat.stop()
                if not (checks and code == EXIT_INCOMPLETE):
                    break
                # the shim found a volume without its marker (an interrupted copy): new volumes, and again
                container.remove(force=True)
                container = None
                inputs.discard(inputs.found())
            if self.copy_files:
                copy_out(container, [s for s in shares if s.writable], sent)
            self._check_oom(container, code, memory)
            return code
        except (LinkLost, requests.exceptions.ConnectionError) as exc:
            if not isinstance(exc, LinkLost) and not self.copy_files:
                raise
            # A remote engine's link dropped (during the run, or while copying files in or out).
            lost = exc if isinstance(exc, LinkLost) else link_lost(engine_url(), exc)
            if heartbeat is not None:
                heartbeat.stop()
            if container is not None and self._remove_after_loss(container):
                lost.hint = "The container on the engine was removed; `hostctl clean` finds nothing more to do."
            container = None
            if lost is exc:
                raise
            raise lost from exc
        except docker.errors.APIError as exc:
            raise RunFailed(f"the Docker engine refused to run the container: {exc.explanation or exc}",
                            "Run `hostctl doctor` to check the engine and image.") from exc
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            if container is not None:
                self._stop(container)
                if keep:
                    self.reporter.info(f"kept container {container.short_id} (docker logs {container.short_id}; "
                                       "remove it with `hostctl clean`)")
                else:
                    self._remove(container)
            if inputs.pending:
                inputs.abandon()

    @staticmethod
    def _lost(exc: BaseException, lines: queue.Queue[tuple[str, str] | BaseException | None]) -> LinkLost:
        """The heartbeat's word that the link is gone: it ends the pump, which waits for the payload's lines."""
        error = link_lost(engine_url(), exc)
        lines.put(error)
        return error

    def _pump(self, stream: Iterator[tuple[bytes | None, bytes | None]], on_line: LineSink,
              lines: queue.Queue[tuple[str, str] | BaseException | None]) -> None:
        """Read the attach stream on a thread; hand whole lines to on_line here, on the main thread.

        The heartbeat puts its lost-link exception on the same queue."""
        splitters = {name: LineSplitter(lambda text, name=name: lines.put((name, text)))
                     for name in ("stdout", "stderr")}

        def read() -> None:
            try:
                for out, err in stream:
                    if out:
                        splitters["stdout"].feed(out)
                    if err:
                        splitters["stderr"].feed(err)
                for splitter in splitters.values():
                    splitter.close()
                failure = stream_failure(stream)
                lines.put(None if failure is None else failure)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                lines.put(exc)

        threading.Thread(target=read, name="docker-attach", daemon=True).start()
        while (item := lines.get()) is not None:
            if isinstance(item, BaseException):
                if isinstance(item, LinkLost):
                    raise item
                if ssh_failure(item) is not None:
                    raise link_lost(engine_url(), item) from item
                if isinstance(item, (requests.exceptions.RequestException, docker.errors.DockerException)):
                    self.reporter.debug(f"attach stream ended: {item}")
                    return
                raise item
            on_line(*item)

    def _wait(self, container: Any, heartbeat: Heartbeat | None = None) -> int:
        lost_since: float | None = None
        while True:
            if heartbeat is not None and heartbeat.lost is not None:
                raise heartbeat.lost
            try:
                status = container.wait(timeout=WAIT_POLL)
                return int(status.get("StatusCode", 1))
            except requests.exceptions.ReadTimeout:
                lost_since = None  # wait's timeout is an HTTP read timeout: the container is still running
            except requests.exceptions.ConnectionError as exc:
                if ssh_failure(exc) is not None:
                    raise link_lost(engine_url(), exc) from exc
                if isinstance(exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError):
                    lost_since = None  # the same timeout, met in the body (the engine sends wait's headers first)
                    continue
                # An engine that went away does not come back by itself: give it a short while, then say so.
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > ENGINE_LOST_SECONDS:
                    raise EnvironmentProblem(f"lost the Docker engine while the payload ran ({exc})",
                                             "Check `docker info`; the run's partial files are kept.") from exc
                time.sleep(1.0)

    def _remove_after_loss(self, container: Any) -> bool:
        """Remove the container over a link that just dropped, trying again for a bounded while: ssh may reconnect,
        but the first try can meet the dying ssh master (its socket still answers for a moment, then the session
        fails), so one failed try says little."""
        removed = threading.Event()
        deadline = time.monotonic() + LOST_CLEANUP_SECONDS

        def remove() -> None:
            while True:
                try:
                    container.remove(force=True)
                    removed.set()
                    return
                except docker.errors.NotFound:
                    removed.set()
                    return
                except Exception as exc:  # noqa: BLE001 - the lease stops it; `hostctl clean` removes it
                    self.reporter.debug(f"could not remove {container.short_id} after the link dropped: {exc}")
                if time.monotonic() + LOST_RETRY_SECONDS >= deadline:
                    return
                time.sleep(LOST_RETRY_SECONDS)

        thread = threading.Thread(target=remove, name="remove-after-loss", daemon=True)
        thread.start()
        thread.join(LOST_CLEANUP_SECONDS)
        return removed.is_set()

    def _check_oom(self, container: Any, code: int, memory: str | None) -> None:
        if code == 0:
            return
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            limit = f" (--memory {memory})" if memory else ""
            raise RunFailed(f"the container ran out of memory{limit} and was killed",
                            "Lower --calib-batch-size, or raise --memory / give Docker more memory.")

    def _stop(self, container: Any) -> None:
        """TERM through docker-init, a grace period (cut short by a second signal), then KILL."""
        try:
            container.reload()
            if container.status not in ("running", "restarting"):
                return
            hurried = threading.Event()
            self.trap.on_hurry(hurried.set)
            container.kill(signal="SIGTERM")
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and not hurried.is_set():
                container.reload()
                if container.status not in ("running", "restarting"):
                    return
                time.sleep(0.1)
            container.kill(signal="SIGKILL")
            container.wait(timeout=30)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            self.reporter.warn(f"could not stop container {container.short_id}: {exc}")

    def _remove(self, container: Any) -> None:
        for _ in range(3):
            try:
                container.remove(force=True)
                return
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                last = exc
                time.sleep(0.5)
        self.reporter.warn(f"could not remove container {container.short_id}: {last}; `hostctl clean` will")


def _later(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """Start `call` on a thread now; the returned function waits for its result (or raises its exception)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="hostctl-later", daemon=True)
    thread.start()

    def result() -> Any:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result
