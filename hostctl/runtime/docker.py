"""The payload in the Vitis AI image, through the Docker SDK. The only module that imports docker.

Life of a run (DESIGN.md sections 6-8):
  prepare: connect -> sweep containers whose hostctl process is gone -> ensure image (per --pull) -> requirements
  run:     create (labelled, init, no network, read-only inputs) -> attach -> start -> stream -> wait -> remove

The image maps UID/GID only in interactive bash, so the container starts as root with our own shim, which maps
the caller's uid/gid onto vitis-ai-user, drops privileges with gosu, activates the conda env and execs the
payload: files land on the host owned by the caller, and the payload's exit code is the container's.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import queue
import re
import shlex
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

import container_payload
from hostctl import __version__
from hostctl.cache import cache_root
from hostctl.errors import EnvironmentProblem, RunFailed, UsageError
from hostctl.options import QuantizeOptions
from hostctl.runtime import LineSink
from hostctl.runtime.lines import LineSplitter
from hostctl.signals import SignalTrap
from hostctl.ui import Reporter

LABEL_RUN = "hostctl.run"
LABEL_PID = "hostctl.pid"
LABEL_PID_START = "hostctl.pid-start"
LABEL_HOST = "hostctl.host"
LABEL_VERSION = "hostctl.version"
LABEL_KEEP = "hostctl.keep"
LABEL_ROLE = "hostctl.role"

PAYLOAD_DIR = Path(container_payload.__file__).resolve().parent
IN_INPUTS = "/hostctl/inputs"
IN_RUN = "/hostctl/run"
IN_MODEL = "/hostctl/model"
IN_CODE = "/opt/hostctl"
IN_USERBASE = "/hostctl/userbase"
IN_REQ = "/hostctl/req"
CONDA_SH = "/opt/vitis_ai/conda/etc/profile.d/conda.sh"
STOP_GRACE = 5.0
WAIT_POLL = 1.0
ENGINE_LOST_SECONDS = 30.0
PULL_HINT = "Check the image name, your network and `docker login`; or use --runtime local."
PROTECTED_PACKAGES = {"torch", "torchvision", "torchaudio", "pytorch-nndct", "pytorch_nndct"}

# Runs as root in the container. Maps the caller onto vitis-ai-user/group (-o: the ids may already be taken),
# drops privileges with gosu (keeps HOME, passwd entry and exit code), activates the env with conda.sh (not
# `conda run`, which buffers output) and execs the command, so that signals and the exit status go straight
# through docker-init to the payload.
SHIM = "; ".join([
    "set -e",
    'if [ -n "${HOSTCTL_JOB:-}" ]; then printf "%s" "$HOSTCTL_JOB" > /hostctl/run/job.json; fi',
    # Only change what differs: usermod complains "no changes" otherwise, and it re-owns the home directory.
    'if [ "$HOSTCTL_UID" != 0 ]; then'
    ' [ "$(getent group vitis-ai-group | cut -d: -f3)" = "$HOSTCTL_GID" ]'
    ' || groupmod -o -g "$HOSTCTL_GID" vitis-ai-group;'
    ' [ "$(id -u vitis-ai-user)" = "$HOSTCTL_UID" ] || usermod -o -u "$HOSTCTL_UID" vitis-ai-user;'
    " set -- gosu vitis-ai-user; else set --; fi",
    """exec "$@" bash -c 'source "$0" && conda activate "$HOSTCTL_CONDA_ENV" && exec "$@"' """
    "/opt/vitis_ai/conda/etc/profile.d/conda.sh HOSTCTL_COMMAND",
])


def shim(command: list[str]) -> list[str]:
    """The container command: bash -c SHIM with `command` spliced in as the activated env's command."""
    script = SHIM.replace("HOSTCTL_COMMAND", " ".join(shlex.quote(c) for c in command))
    return ["bash", "-c", script]


def payload_environment(uid: str, gid: str, conda_env: str) -> dict[str, str]:
    """What the shim and the payload read: whom to map, which env, where the code is; unbuffered UTF-8 output."""
    return {"HOSTCTL_UID": uid, "HOSTCTL_GID": gid, "HOSTCTL_CONDA_ENV": conda_env, "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8", "PYTHONPATH": IN_CODE, "PYTHONDONTWRITEBYTECODE": "1"}


PAYLOAD_COMMAND = ["python", "-u", "-m", "container_payload", "--job", f"{IN_RUN}/job.json"]


# -- engine -------------------------------------------------------------------------------------------------------
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
        return EnvironmentProblem(f"no Docker engine at {where}: the socket does not exist",
                                  "Start Docker (sudo systemctl start docker, or scripts/docker-engine.sh start) "
                                  "or set DOCKER_HOST; or run with --runtime local.")
    if "Connection refused" in text or "ConnectionRefused" in text:
        return EnvironmentProblem(f"the Docker engine at {where} refused the connection",
                                  "Start the engine or fix DOCKER_HOST; or run with --runtime local.")
    return EnvironmentProblem(f"cannot reach the Docker engine at {where}: {text.splitlines()[0] if text else exc}",
                              "Check `docker info`; or run with --runtime local.")


def is_local_engine(client: docker.DockerClient) -> bool:
    url = client.api.base_url
    return url.startswith(("http+docker://localhost", "http+docker://localunixsocket")) or \
        bool(re.match(r"^https?://(localhost|127\.0\.0\.1|\[::1\])[:/]", url))


# -- leftovers ----------------------------------------------------------------------------------------------------
def _process_start(pid: int) -> str:
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
    start = _process_start(pid)
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


# -- image --------------------------------------------------------------------------------------------------------
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
                                 "--pull never; or run with --runtime local.")
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


# -- requirements -------------------------------------------------------------------------------------------------
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


def engine_facts(image: str) -> dict[str, Any]:
    """What `hostctl doctor` reports about the engine and the image; raises EnvironmentProblem if unreachable."""
    client = connect()
    version = client.version()
    facts: dict[str, Any] = {"url": client.api.base_url, "local": is_local_engine(client),
                             "version": version.get("Version"), "api_version": version.get("ApiVersion"),
                             "os_arch": f"{version.get('Os')}/{version.get('Arch')}", "image": None,
                             "image_arch": None, "leftovers": len(orphans(client, include_kept=True))}
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
    return facts


def clean(dry_run: bool, include_caches: bool = True) -> dict[str, list[str]]:
    """Remove labelled containers whose owner is gone or that were kept, and stale requirement caches."""
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
    return {"containers": [f"{c.short_id} {c.labels.get(LABEL_RUN, '')}" for c in containers],
            "caches": [str(p) for p in caches]}


# -- files: bind mounts on a local engine, copies on a remote one -------------------------------------------------
@dataclass(frozen=True)
class Share:
    host: Path
    inside: str
    writable: bool


def copy_in(container: Any, shares: list[Share]) -> dict[str, tuple[int, int]]:
    """Put every share into the created container, owned by the caller (whom the shim maps vitis-ai-user to).

    Returns what went in, as {path inside: (size, mtime)}, so that copy_out brings back only what changed.
    """
    uid, gid = os.getuid(), os.getgid()
    sent: dict[str, tuple[int, int]] = {}

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name.split("/"):
            return None
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        sent["/" + info.name] = (info.size, int(info.mtime))
        return info

    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as buf:
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for share in shares:
                tar.add(str(share.host), arcname=share.inside.lstrip("/"), recursive=True, filter=owned)
        buf.seek(0)
        if not container.put_archive("/", buf):
            raise RunFailed("the Docker engine refused the copied inputs", "Run `hostctl doctor`.")
    return sent


def copy_out(container: Any, shares: list[Share], sent: dict[str, tuple[int, int]]) -> None:
    """Bring back what the container created or changed in writable shares (safe paths only).

    Files that come back as they went in are skipped: the host may have written to its copy meanwhile
    (run.log grows on the host while the payload runs).
    """
    for share in shares:
        stream, _ = container.get_archive(share.inside)
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as buf:
            for chunk in stream:
                buf.write(chunk)
            buf.seek(0)
            with tarfile.open(fileobj=buf, mode="r") as tar:
                members = []
                for member in tar.getmembers():
                    _, _, rest = member.name.partition("/")  # the archive's top entry is the directory itself
                    inside = f"{share.inside}/{rest}"
                    if rest and sent.get(inside) != (member.size, int(member.mtime)):
                        member.name = rest
                        members.append(member)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(str(share.host), members=members, filter="data")
                else:  # Python < 3.10.12: no extraction filters; keep to plain files and dirs inside the share
                    safe = [m for m in members if (m.isfile() or m.isdir()) and not m.name.startswith("/")
                            and ".." not in m.name.split("/")]
                    tar.extractall(str(share.host), members=safe)  # noqa: S202 - members checked above


# -- the runtime --------------------------------------------------------------------------------------------------
class DockerRuntime:
    def __init__(self, opts: QuantizeOptions, run_dir: Path, reporter: Reporter, trap: SignalTrap) -> None:
        self.opts = opts
        self.run_dir = run_dir
        self.reporter = reporter
        self.trap = trap
        self.client: docker.DockerClient | None = None
        self.image: Any = None
        self.userbase: Path | None = None
        self.requirements_text = check_requirements(opts.requirements) if opts.requirements else None
        self.copy_files = False

    def prepare(self) -> None:
        self.client = connect()
        # A remote engine cannot see this machine's files: copy them in and the results out instead of binding.
        self.copy_files = not is_local_engine(self.client) or os.environ.get("HOSTCTL_DOCKER_FILES") == "copy"
        if self.copy_files:
            self.reporter.info(f"engine at {engine_url()} is remote: inputs are copied into the container and "
                               "results copied back")
        sweep(self.client, self.reporter)
        self.image = ensure_image(self.client, self.opts.image, self.opts.pull, self.reporter)
        check_platform(self.image)
        if self.requirements_text is not None:
            self.userbase = self._install_requirements()

    def view(self, path: Path) -> str:
        path = path.resolve()
        for host, inside in self._mapped_dirs():
            if path == host or host in path.parents:
                return str(Path(inside) / path.relative_to(host))
        raise AssertionError(f"{path} is not mounted in the container")

    def _mapped_dirs(self) -> list[tuple[Path, str]]:
        dirs = [(self.run_dir.resolve(), IN_RUN), (self.opts.input_dir.resolve(), IN_INPUTS)]
        if self.opts.model_path:
            dirs.append((self.opts.model_path.resolve(), IN_MODEL))
        return dirs

    def describe(self) -> dict[str, Any]:
        assert self.client is not None and self.image is not None
        version = self.client.version()
        return {"runtime": "docker", "image": self.opts.image, "image_id": self.image.id,
                "conda_env": self.opts.conda_env, "engine_version": version.get("Version"),
                "api_version": version.get("ApiVersion"), "requirements_cache": str(self.userbase or "")}

    # -- containers -----------------------------------------------------------------------------------------------
    def _labels(self, role: str) -> dict[str, str]:
        pid = os.getpid()
        labels = {LABEL_RUN: self.run_dir.name, LABEL_PID: str(pid), LABEL_PID_START: _process_start(pid),
                  LABEL_HOST: socket.gethostname(), LABEL_VERSION: __version__, LABEL_ROLE: role}
        if self.opts.keep_container and role == "payload":
            labels[LABEL_KEEP] = "1"
        return labels

    def _environment(self) -> dict[str, str]:
        env = payload_environment(str(os.getuid()), str(os.getgid()), self.opts.conda_env)
        if self.userbase is not None:
            env["PYTHONUSERBASE"] = IN_USERBASE
        return env

    def _shares(self) -> list[Share]:
        """What the payload sees of this machine: inputs and code read-only, only the run directory writable."""
        shares = [Share(self.opts.input_dir.resolve(), IN_INPUTS, False), Share(self.run_dir.resolve(), IN_RUN, True),
                  Share(PAYLOAD_DIR, f"{IN_CODE}/container_payload", False)]
        if self.opts.model_path:
            shares.append(Share(self.opts.model_path.resolve(), IN_MODEL, False))
        if self.userbase is not None:
            shares.append(Share(self.userbase, IN_USERBASE, False))
        return shares

    def run(self, job_file: Path, on_line: LineSink) -> int:
        return self._run_container(shim(PAYLOAD_COMMAND), self._shares(), self._environment(), "payload",
                                   network=False, on_line=on_line, keep=self.opts.keep_container,
                                   memory=self.opts.memory)

    def _run_container(self, command: list[str], shares: list[Share], environment: dict[str, str], role: str, *,
                       network: bool, on_line: LineSink, keep: bool = False, workdir: str = IN_RUN,
                       memory: str | None = None) -> int:
        assert self.client is not None
        mounts = [] if self.copy_files else [Mount(s.inside, str(s.host), type="bind", read_only=not s.writable)
                                             for s in shares]
        container = None
        try:
            container = self.client.containers.create(
                self.image.id, command=command, entrypoint=[], user="root", working_dir=workdir,
                environment=environment, mounts=mounts, labels=self._labels(role), init=True, tty=False,
                stdin_open=False, network_mode="bridge" if network else "none", detach=True,
                mem_limit=memory, memswap_limit=memory,
            )
            sent = copy_in(container, shares) if self.copy_files else {}
            stream = self.client.api.attach(container.id, stream=True, logs=True, demux=True)
            container.start()
            self._pump(stream, on_line)
            code = self._wait(container)
            if self.copy_files:
                copy_out(container, [s for s in shares if s.writable], sent)
            self._check_oom(container, code)
            return code
        except docker.errors.APIError as exc:
            raise RunFailed(f"the Docker engine refused to run the container: {exc.explanation or exc}",
                            "Run `hostctl doctor` to check the engine and image.") from exc
        finally:
            if container is not None:
                self._stop(container)
                if keep:
                    self.reporter.info(f"kept container {container.short_id} (docker logs {container.short_id}; "
                                       "remove it with `hostctl clean`)")
                else:
                    self._remove(container)

    def _pump(self, stream: Iterator[tuple[bytes | None, bytes | None]], on_line: LineSink) -> None:
        """Read the attach stream on a thread; hand whole lines to on_line here, on the main thread."""
        lines: queue.Queue[tuple[str, str] | BaseException | None] = queue.Queue()
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
                lines.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                lines.put(exc)

        threading.Thread(target=read, name="docker-attach", daemon=True).start()
        while (item := lines.get()) is not None:
            if isinstance(item, BaseException):
                if isinstance(item, (requests.exceptions.RequestException, docker.errors.DockerException)):
                    self.reporter.debug(f"attach stream ended: {item}")
                    return
                raise item
            on_line(*item)

    def _wait(self, container: Any) -> int:
        lost_since: float | None = None
        while True:
            try:
                status = container.wait(timeout=WAIT_POLL)
                return int(status.get("StatusCode", 1))
            except requests.exceptions.ReadTimeout:
                lost_since = None  # wait's timeout is an HTTP read timeout: the container is still running
            except requests.exceptions.ConnectionError as exc:
                # An engine that went away does not come back by itself: give it a short while, then say so.
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > ENGINE_LOST_SECONDS:
                    raise EnvironmentProblem(f"lost the Docker engine while the payload ran ({exc})",
                                             "Check `docker info`; the run's partial files are kept.") from exc
                time.sleep(1.0)

    def _check_oom(self, container: Any, code: int) -> None:
        if code == 0:
            return
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            limit = f" (--memory {self.opts.memory})" if self.opts.memory else ""
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

    # -- requirements ---------------------------------------------------------------------------------------------
    def _install_requirements(self) -> Path:
        """pip install --user into a host cache keyed by image id + env + requirements; a hit installs nothing."""
        assert self.opts.requirements is not None and self.requirements_text is not None
        cache = requirements_cache(self.image.id, self.requirements_text, self.opts.conda_env)
        marker = cache / ".complete"
        if marker.is_file():
            self.reporter.info(f"requirements: using the cache in {cache}")
            return cache
        staging = cache.with_name(cache.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        req = self.opts.requirements.resolve()
        shares = [Share(staging, IN_USERBASE, True), Share(req.parent, IN_REQ, False)]
        environment = dict(self._environment(), PYTHONUSERBASE=IN_USERBASE, PIP_DISABLE_PIP_VERSION_CHECK="1")
        command = shim(["python", "-m", "pip", "install", "--user", "--no-warn-script-location",
                        "-r", f"{IN_REQ}/{req.name}"])
        self.reporter.info(f"requirements: installing {req.name} into {cache}")
        log: list[str] = []

        def on_line(stream: str, line: str) -> None:
            log.append(line)
            self.reporter.log(line, stream)

        try:
            code = self._run_container(command, shares, environment, "requirements", network=True,
                                       on_line=on_line, workdir=IN_REQ)
            if code != 0:
                raise RunFailed(f"pip install -r {req.name} failed in the image (exit {code})",
                                "Last lines:\n  " + "\n  ".join(log[-10:]))
            (staging / ".complete").write_text(json.dumps({"image_id": self.image.id, "conda_env": self.opts.conda_env,
                                                           "requirements": self.requirements_text}),
                                               encoding="utf-8")
            if cache.exists():
                shutil.rmtree(cache)
            staging.rename(cache)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cache


# -- the equivalent command line ----------------------------------------------------------------------------------
def docker_command(opts: QuantizeOptions) -> str:
    """A runnable `docker run` line equivalent to the run (it writes straight into --output-dir)."""
    from container_payload.job import SAMPLES, STATE_DICT

    out = opts.output_dir.resolve()
    job = opts.to_job(f"{IN_INPUTS}/{STATE_DICT}", f"{IN_INPUTS}/{SAMPLES}", IN_RUN,
                      IN_MODEL if opts.model_path else None)
    env = payload_environment("$(id -u)", "$(id -g)", opts.conda_env)
    parts = ["mkdir", "-p", shlex.quote(str(out)), "&&", "docker", "run", "--rm", "--init", "--network", "none",
             "--user", "root", "--entrypoint", "''", "-w", IN_RUN]
    if opts.memory:
        parts += ["--memory", shlex.quote(opts.memory), "--memory-swap", shlex.quote(opts.memory)]
    binds = [(opts.input_dir.resolve(), IN_INPUTS, True), (out, IN_RUN, False),
             (PAYLOAD_DIR, f"{IN_CODE}/container_payload", True)]
    if opts.model_path:
        binds.append((opts.model_path.resolve(), IN_MODEL, True))
    for source, target, read_only in binds:
        spec = f"type=bind,source={source},target={target}" + (",readonly" if read_only else "")
        parts += ["--mount", shlex.quote(spec)]
    for key, value in env.items():
        parts += ["-e", f'{key}="{value}"' if value.startswith("$(") else shlex.quote(f"{key}={value}")]
    compact = json.dumps(json.loads(job.to_json()), ensure_ascii=False, separators=(",", ":"))
    parts += ["-e", shlex.quote(f"HOSTCTL_JOB={compact}")]
    parts += [shlex.quote(opts.image), *map(shlex.quote, shim(PAYLOAD_COMMAND))]
    return " ".join(parts)
