"""Files for the container: bind mounts on a local engine, copies in and out on a remote one.

A remote engine (ssh://, tcp://, a remote context) cannot see this machine's paths, so every share is put into
the created container with put_archive and the writable ones are brought back with get_archive.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import Mount

from hostctl.errors import RunFailed


@dataclass(frozen=True)
class Share:
    """A host directory (or file) the container sees at `inside`."""

    host: Path
    inside: str
    writable: bool


def mounts(shares: list[Share]) -> list[Mount]:
    return [Mount(s.inside, str(s.host), type="bind", read_only=not s.writable) for s in shares]


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
