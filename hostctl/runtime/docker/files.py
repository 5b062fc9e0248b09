"""Files for the container: bind mounts on a local engine, copies in and out on a remote one.

A remote engine (ssh://, tcp://, a remote context) cannot see this machine's paths, so every share is put into
the created container with put_archive and the writable ones are brought back with get_archive.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
from docker.types import Mount

from hostctl.errors import EnvironmentProblem, HostctlError, RunFailed
from hostctl.ui import Reporter


@dataclass(frozen=True)
class Share:
    """A host directory (or file) the container sees at `inside`."""

    host: Path
    inside: str
    writable: bool
    cache: str = ""  # on a remote engine, kept there in a volume between runs with the same content, labelled with
    # this kind ("inputs", "code": inputs.py)
    early: bool = False  # needed when the command starts (the payload's code); the rest may follow (container.py)


def one_file_archive(name: str, data: bytes) -> bytes:
    """A tar archive of one small file (mode 0644, mtime now), for put_archive."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, time.time()
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def mounts(shares: list[Share]) -> list[Mount]:
    return [Mount(s.inside, str(s.host), type="bind", read_only=not s.writable) for s in shares]


CHUNK = 1 << 20  # bytes per piece of the streamed archive; at most QUEUED of them wait in memory
QUEUED = 8
MB = 1e6


def copy_in(container: Any, shares: list[Share], reporter: Reporter | None = None,
            last: list[tuple[str, bytes]] | None = None) -> dict[str, tuple[int, int]]:
    """Put every share into the container, owned by the caller (whom the shim maps vitis-ai-user to), and then
    the small files `last` (path inside, content): the engine writes the archive's members in order, so when one
    of those appears, everything before it is in.

    The archive is streamed as it is written (a 1 GB calibration file never sits in memory), with a progress bar
    in MB. Returns what went in, as {path inside: (size, mtime)}, so that copy_out brings back only what changed.
    """
    uid, gid = os.getuid(), os.getgid()
    sent: dict[str, tuple[int, int]] = {}

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name.split("/"):
            return None
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        sent["/" + info.name] = (info.size, int(info.mtime))
        return info

    def write(out: _QueueWriter) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for share in shares:
                tar.add(str(share.host), arcname=share.inside.lstrip("/"), recursive=True, filter=owned)
            for path, data in last or []:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, time.time(), uid, gid
                tar.addfile(info, io.BytesIO(data))

    total = sum(_size(share.host) for share in shares)
    show = reporter is not None and total >= 8 * MB
    if show:
        reporter.start_task("copy-in", round(total / MB), "Copying inputs to the engine", unit="MB")
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if show:
            reporter.update_task("copy-in", done=min(done, total) // MB)

    copied = False
    try:
        with _streamed(write, progress) as body:
            if not container.put_archive("/", body):
                raise RunFailed("the Docker engine refused the copied inputs", "Run `hostctl doctor`.")
        copied = True
    except docker.errors.APIError as exc:
        raise _copy_problem(exc, "copying the inputs into the container") from exc
    finally:
        if show:
            reporter.finish_task("copy-in", complete=copied)  # a copy cut short shows how far it got
            reporter.close()
    return sent


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _copy_problem(exc: docker.errors.APIError, doing: str) -> HostctlError:
    text = str(exc.explanation or exc)
    if "no space left on device" in text.lower():
        return EnvironmentProblem(f"the Docker engine's disk is full ({doing}): {text.splitlines()[0]}",
                                  "Free space on the engine's machine (docker system prune, or remove old images "
                                  "with docker image prune), then run again.")
    return RunFailed(f"the Docker engine failed {doing}: {text.splitlines()[0] if text else exc}",
                     "Run `hostctl doctor`.")


class _QueueWriter(io.RawIOBase):
    """A write-only file that hands CHUNK-sized pieces to a bounded queue (the writer waits while it is full)."""

    def __init__(self, pieces: queue.Queue[bytes | BaseException | None], stop: threading.Event) -> None:
        self.pieces = pieces
        self.stop = stop
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.pending += data
        while len(self.pending) >= CHUNK:
            self._put(bytes(self.pending[:CHUNK]))
            del self.pending[:CHUNK]
        return len(data)

    def flush_all(self) -> None:
        if self.pending:
            self._put(bytes(self.pending))
            self.pending.clear()

    def _put(self, piece: bytes) -> None:
        while not self.stop.is_set():
            try:
                self.pieces.put(piece, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Abandoned()


class _Abandoned(Exception):
    """The reader stopped taking pieces (the upload failed): the writer ends quietly."""


@contextlib.contextmanager
def _streamed(write: Callable[[_QueueWriter], None], progress: Callable[[int], None]) -> Iterator[Iterator[bytes]]:
    """An iterator of the bytes `write` produces on a thread; its memory is bounded by QUEUED pieces."""
    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUED)
    stop = threading.Event()

    def produce() -> None:
        out = _QueueWriter(pieces, stop)
        try:
            write(out)
            out.flush_all()
            out._put(None)  # type: ignore[arg-type] - the end marker
        except _Abandoned:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the reading side
            try:
                out._put(exc)  # type: ignore[arg-type]
            except _Abandoned:
                pass

    def consume() -> Iterator[bytes]:
        while True:
            item = pieces.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            progress(len(item))
            yield item

    thread = threading.Thread(target=produce, name="copy-in-tar", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join(timeout=5)


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (get_archive's stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = iter(chunks)
        self.left = memoryview(b"")  # a view: taking a piece off the front copies nothing (chunks are 2 MB)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.left:
            try:
                self.left = memoryview(next(self.chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def copy_out(container: Any, shares: list[Share], sent: dict[str, tuple[int, int]]) -> None:
    """Bring back what the container created or changed in writable shares (safe paths only), streamed.

    Files that come back as they went in are skipped: the host may have written to its copy meanwhile
    (run.log grows on the host while the payload runs).
    """
    for share in shares:
        try:
            stream, _ = container.get_archive(share.inside, chunk_size=CHUNK)
        except docker.errors.APIError as exc:
            raise _copy_problem(exc, f"copying {share.inside} out of the container") from exc
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(stream), CHUNK), mode="r|") as tar:
            for member in tar:
                _, _, rest = member.name.partition("/")  # the archive's top entry is the directory itself
                inside = f"{share.inside}/{rest}"
                if not rest or sent.get(inside) == (member.size, int(member.mtime)):
                    continue
                member.name = rest
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, str(share.host), filter="data")
                elif (member.isfile() or member.isdir()) and not member.name.startswith("/") \
                        and ".." not in member.name.split("/"):
                    # Python < 3.10.12: no extraction filters; keep to plain files and dirs inside the share
                    tar.extract(member, str(share.host))  # noqa: S202 - member checked above
