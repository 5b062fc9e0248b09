"""On a remote engine, the inputs stay there between runs: a volume per content, filled once, mounted read-only.
The payload's code too (a volume per hostctl version), so that a re-run copies nothing before its container starts.

A remote run copies its inputs into the container (files.py): 41 MB of calibration data is half a second on
loopback, a 1 GB file over a 100 Mbit/s link well over a minute, and users run quantize on the same inputs again
and again (another --quantizer, --calib-batch-size, --threads). So the input directory goes once into a Docker
volume labelled with its content's sha256 (every file's path, size and bytes), and the next run with the same
content mounts that volume read-only instead of copying. The run that makes a volume mounts it writable in its own
container and fills it with the same copy that brings the container its other files (container.py).

  - A volume counts only when it holds MARKER, the last member of the archive that filled it, with the content's
    key: an interrupted fill is never used, and is removed when found.
  - Each fill makes its own volume (a random suffix), so two runs filling at once never write into one volume.
  - After a fill, only the newest KEEP_ENV (default 3) of its kind (inputs, code) are kept; older ones go when
    no container uses them. `hostctl clean` removes every one not in use; KEEP_ENV=0 turns the cache off (every
    run copies).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from hostctl import __version__
from hostctl.errors import UsageError
from hostctl.runtime.docker.files import Share
from hostctl.ui import Reporter

KEEP_ENV = "HOSTCTL_INPUT_CACHE"
KEEP_DEFAULT = 3
LABEL_INPUTS = "hostctl.inputs"  # the content's key
LABEL_CACHE = "hostctl.cache"  # the kind of content (Share.cache): "inputs" or "code"
MARKER = ".hostctl-inputs-complete"
READ = 1 << 20


def kept() -> int:
    """How many input volumes to keep on the engine (KEEP_ENV; 0: no cache)."""
    value = os.environ.get(KEEP_ENV, "").strip()
    if not value:
        return KEEP_DEFAULT
    try:
        count = int(value)
        if count < 0:
            raise ValueError(value)
    except ValueError:
        raise UsageError(f"{KEEP_ENV}={value} is not a count of input volumes to keep on a remote engine",
                         f"Set {KEEP_ENV} to a whole number (0 turns the cache off), or unset it.") from None
    return count


def content_key(root: Path) -> str:
    """sha256 of what copy_in sends of `root`: each file's relative path, size and bytes, each link's target
    (__pycache__ is skipped there too)."""
    digest = hashlib.sha256()
    for path in _entries(root):
        name = path.relative_to(root).as_posix().encode()
        if path.is_symlink():
            digest.update(b"L\0" + name + b"\0" + os.readlink(path).encode() + b"\0")
        else:
            digest.update(b"F\0" + name + b"\0" + str(path.stat().st_size).encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(READ):
                    digest.update(block)
    return digest.hexdigest()


def _entries(root: Path) -> Iterator[Path]:
    if not root.is_dir() or root.is_symlink():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            yield Path(folder) / name
        for name in dirs:
            if (Path(folder) / name).is_symlink():
                yield Path(folder) / name


class InputVolumes:
    """Find, make, remove and trim the volumes kept on one engine."""

    def __init__(self, client: docker.DockerClient, reporter: Reporter) -> None:
        self.client = client
        self.reporter = reporter

    def find(self, key: str) -> list[str]:
        """Volumes labelled with this content, newest first (not yet checked for the marker)."""
        return [v.name for v in _newest_first(self.client.volumes.list(filters={"label": f"{LABEL_INPUTS}={key}"}))]

    def create(self, kind: str, key: str) -> str:
        """A new, empty volume for this content (a name of its own: concurrent fills never share one)."""
        name = f"hostctl-{kind}-{key[:16]}-{secrets.token_hex(3)}"
        self.client.volumes.create(name, labels={LABEL_INPUTS: key, LABEL_CACHE: kind,
                                                 "hostctl.version": __version__})
        return name

    def discard(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove(force=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self.reporter.debug(f"could not remove input volume {name}: {exc}")

    def trim(self, kind: str, keep: int) -> list[str]:
        """Remove all but the newest `keep` volumes of this kind that no container uses; returns what went."""
        return remove_unused(self.client, _newest_first(kept_volumes(self.client, kind))[keep:])


class CachedInputs:
    """The volumes one container mounts for its cached shares: for each, the newest volume of its content found on
    the engine (read-only), else a new one (`pending`), mounted writable in this container only and filled by the
    run's own copy into it (container.py), its `markers()` last. The container's shim checks the markers of the
    volumes found (`checks`) before anything runs; if one fails, they are removed (`discard`) and the next
    `mounts()` finds or makes others."""

    def __init__(self, volumes: InputVolumes, shares: list[Share]) -> None:
        self.volumes = volumes
        self.keys = {share: content_key(share.host) for share in shares}
        self.avoid: set[str] = set()
        self.chosen: dict[Share, str] = {}
        self.pending: set[Share] = set()  # new volumes, not yet filled
        self.filled: set[Share] = set()

    def mounts(self) -> list[docker.types.Mount]:
        for share, key in self.keys.items():
            if share in self.pending or share in self.filled:  # made by this run: kept on a second try
                continue
            found = [name for name in self.volumes.find(key) if name not in self.avoid]
            if found:
                self.chosen[share] = found[0]
            else:
                self.chosen[share] = self.volumes.create(share.cache, key)
                self.pending.add(share)
        return [docker.types.Mount(share.inside, name, type="volume", read_only=share not in self.pending,
                                   no_copy=True)
                for share, name in self.chosen.items()]

    def markers(self, shares: list[Share]) -> list[tuple[str, bytes]]:
        """The completion markers of these shares' new volumes, to be copied in after their content."""
        return [(f"{share.inside}/{MARKER}", self.keys[share].encode()) for share in shares]

    def filled_in(self, shares: list[Share]) -> None:
        """These shares' new volumes now hold their content and marker."""
        self.pending.difference_update(shares)
        self.filled.update(shares)

    def abandon(self) -> None:
        """Remove the new volumes not filled (the run ended first, or their fill failed), once no container
        mounts them: a volume without its marker is never used, but would take the engine's disk."""
        for share in self.pending:
            self.volumes.discard(self.chosen[share])
        self.pending.clear()

    def checks(self) -> str:
        """What the container's shim checks before the command starts (shim.CHECK_ENV): each volume found on the
        engine (not made by this run) must hold its marker with its key."""
        return " ".join(f"{share.inside}/{MARKER}={self.keys[share]}" for share, name in self.chosen.items()
                        if share not in self.pending and share not in self.filled)

    def found(self) -> list[str]:
        return [name for share, name in self.chosen.items() if share not in self.pending and share not in self.filled]

    def discard(self, names: list[str]) -> None:
        """Remove incomplete volumes (once the container that mounted them is gone); never choose them again."""
        for name in names:
            self.volumes.reporter.debug(f"input volume {name} is incomplete (an interrupted copy): removed")
            self.volumes.discard(name)
            self.avoid.add(name)
        self.chosen = {share: name for share, name in self.chosen.items() if name not in self.avoid}

    def report(self, keep: int) -> None:
        for share, name in self.chosen.items():
            if share.cache != "inputs":
                if share in self.filled:
                    self.volumes.trim(share.cache, keep)
                    self.volumes.reporter.debug(f"{share.cache} kept on the engine in volume {name}")
            elif share in self.filled:
                trimmed = self.volumes.trim(share.cache, keep)
                self.volumes.reporter.info(
                    f"inputs kept on the engine in volume {name} for the next runs with the same content "
                    f"({KEEP_ENV}=0 turns this off)" + (f"; removed {len(trimmed)} older one(s)" if trimmed else ""))
            else:
                self.volumes.reporter.info(f"inputs already on the engine (volume {name}, same content): not copied")


def remove_unused(client: docker.DockerClient, volumes: list[Any], dry_run: bool = False) -> list[str]:
    """Remove the volumes no container uses (the engine refuses the others); returns the names removed."""
    if not volumes:
        return []
    in_use = {mount.get("Name") for container in client.containers.list(all=True, sparse=True)
              for mount in container.attrs.get("Mounts") or [] if mount.get("Type") == "volume"}
    removed = []
    for volume in volumes:
        if volume.name in in_use:
            continue
        if not dry_run:
            try:
                volume.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:  # taken by a run that started just now
                continue
        removed.append(volume.name)
    return removed


def kept_volumes(client: docker.DockerClient, kind: str | None = None) -> list[Any]:
    """The volumes this cache keeps on the engine: of one kind, or all."""
    return client.volumes.list(filters={"label": f"{LABEL_CACHE}={kind}" if kind else LABEL_CACHE})


def _newest_first(volumes: list[Any]) -> list[Any]:
    return sorted(volumes, key=lambda v: v.attrs.get("CreatedAt", ""), reverse=True)
