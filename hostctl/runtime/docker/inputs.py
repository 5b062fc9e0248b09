"""On a remote engine, the inputs stay there between runs: a volume per content, filled once, mounted read-only.

A remote run copies its inputs into the container (files.py): 41 MB of calibration data is half a second on
loopback, a 1 GB file over a 100 Mbit/s link well over a minute, and users run quantize on the same inputs again
and again (another --quantizer, --calib-batch-size, --threads). So the input directory goes once into a Docker
volume labelled with its content's sha256 (every file's path, size and bytes), and the next run with the same
content mounts that volume read-only instead of copying.

  - A volume counts only when it holds MARKER, the last member of the archive that filled it, with the content's
    key: an interrupted fill is never used, and is removed when found.
  - Each fill makes its own volume (a random suffix), so two runs filling at once never write into one volume.
  - After a fill, only the newest KEEP_ENV (default 3) are kept; older ones go when no container uses them.
    `hostctl clean` removes every one not in use; KEEP_ENV=0 turns the cache off (every run copies).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from hostctl import __version__
from hostctl.errors import UsageError
from hostctl.runtime.docker.files import Share, copy_in, one_file_archive
from hostctl.runtime.docker.labels import run_labels
from hostctl.ui import Reporter

KEEP_ENV = "HOSTCTL_INPUT_CACHE"
KEEP_DEFAULT = 3
LABEL_INPUTS = "hostctl.inputs"  # the content's key
LABEL_CACHE = "hostctl.cache"  # "inputs" on every volume of this cache
MARKER = ".hostctl-inputs-complete"
PREFIX = "hostctl-inputs-"
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
    """Find, fill, check and trim the input volumes on one engine, for one run."""

    def __init__(self, client: docker.DockerClient, image: Any, run_name: str, reporter: Reporter) -> None:
        self.client = client
        self.image = image
        self.run_name = run_name
        self.reporter = reporter

    def find(self, key: str) -> list[str]:
        """Volumes labelled with this content, newest first (not yet checked for the marker)."""
        return [v.name for v in _newest_first(self.client.volumes.list(filters={"label": f"{LABEL_INPUTS}={key}"}))]

    def fill(self, share: Share, key: str) -> str:
        """A new volume with the share's content and, last, the marker; removed again if anything fails."""
        name = f"{PREFIX}{key[:16]}-{secrets.token_hex(3)}"
        self.client.volumes.create(name, labels={LABEL_INPUTS: key, LABEL_CACHE: "inputs",
                                                          "hostctl.version": __version__})
        filler = None
        try:
            filler = self.client.containers.create(
                self.image.id, command=["true"], entrypoint=[], user="root", network_mode="none",
                mounts=[docker.types.Mount(share.inside, name, type="volume", no_copy=True)],
                labels=run_labels(self.run_name, "inputs", False))
            copy_in(filler, [share], self.reporter)
            if not filler.put_archive(share.inside, one_file_archive(MARKER, key.encode())):
                raise docker.errors.APIError("the engine refused the inputs' completion marker")
        except BaseException:
            self._remove_quietly(filler)
            self.discard(name)
            raise
        self._remove_quietly(filler)
        return name

    def complete(self, container: Any, share: Share, key: str) -> bool:
        """Whether the volume the container mounts at share.inside holds this content's marker."""
        try:
            stream, _ = container.get_archive(f"{share.inside}/{MARKER}")
            data = b"".join(stream)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.extractfile(MARKER)
                return member is not None and member.read().decode(errors="replace") == key
        except (docker.errors.NotFound, tarfile.TarError, KeyError):
            return False

    def discard(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove(force=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self.reporter.debug(f"could not remove input volume {name}: {exc}")

    def trim(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` input volumes that no container uses; returns what went."""
        return remove_unused(self.client, _newest_first(all_input_volumes(self.client))[keep:])

    @staticmethod
    def _remove_quietly(container: Any) -> None:
        if container is not None:
            try:
                container.remove(force=True)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                pass


class CachedInputs:
    """The input volumes one container mounts: for each cached share, the newest volume of its content found on
    the engine, else one filled now. One found is checked for its marker while the container is prepared
    (`incomplete`); one that fails is removed (`discard`) and the next `mounts()` fills another."""

    def __init__(self, volumes: InputVolumes, shares: list[Share]) -> None:
        self.volumes = volumes
        self.keys = {share: content_key(share.host) for share in shares}
        self.avoid: set[str] = set()
        self.chosen: dict[Share, str] = {}
        self.filled: set[Share] = set()

    def mounts(self) -> list[docker.types.Mount]:
        self.chosen, self.filled = {}, set()
        for share, key in self.keys.items():
            found = [name for name in self.volumes.find(key) if name not in self.avoid]
            if found:
                self.chosen[share] = found[0]
            else:
                self.chosen[share] = self.volumes.fill(share, key)
                self.filled.add(share)
        return [docker.types.Mount(share.inside, name, type="volume", read_only=True, no_copy=True)
                for share, name in self.chosen.items()]

    def incomplete(self, container: Any) -> list[str]:
        """The volumes found on the engine (not filled now) that lack their marker in this container."""
        return [name for share, name in self.chosen.items()
                if share not in self.filled and not self.volumes.complete(container, share, self.keys[share])]

    def discard(self, names: list[str]) -> None:
        """Remove incomplete volumes (once the container that mounted them is gone); never choose them again."""
        for name in names:
            self.volumes.reporter.debug(f"input volume {name} is incomplete (an interrupted copy): removed")
            self.volumes.discard(name)
            self.avoid.add(name)

    def report(self, keep: int) -> None:
        for share, name in self.chosen.items():
            if share in self.filled:
                trimmed = self.volumes.trim(keep)
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


def all_input_volumes(client: docker.DockerClient) -> list[Any]:
    return client.volumes.list(filters={"label": f"{LABEL_CACHE}=inputs"})


def _newest_first(volumes: list[Any]) -> list[Any]:
    return sorted(volumes, key=lambda v: v.attrs.get("CreatedAt", ""), reverse=True)
