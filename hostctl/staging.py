"""The output-directory rule, in one place: hostctl deletes or replaces only files that it wrote itself.

What counts as "written by hostctl" is what the run being replaced recorded in its manifest (`run.json`:
`written`, every file by relative path; older manifests list top-level `files`). Before anything runs,
`check_output_dir` refuses (exit 2) an output directory that holds anything else, one that is, contains or lies
inside an input, and one that cannot be written. hostctl's own temporary names (`.<name>.hostctl-*` beside or
inside the output directory, a report's `.report.<hex>.tmp|old`) are not the user's: a run sweeps those that no
live run holds.

A run writes into a staging directory beside the output directory (inside it when the output directory is a
mount point, which cannot be renamed), under a lock that keeps a second run off the same output directory. On
success the new files replace the previous run's files one rename each, `run.json` last; nothing else in the
directory is touched. On failure or interruption the staging directory becomes `<name>.failed-<time>` beside
the output directory (or is dropped when the payload never started), and the previous results are untouched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from hostctl.errors import InputError, UsageError

MANIFEST = "run.json"
RUN_LOG = "run.log"
TMP_MARK = ".hostctl-tmp-"
OLD_MARK = ".hostctl-old-"
LOCK_MARK = ".hostctl.lock"
FAILED_MARK = ".failed-"
# Files a failed run keeps when the disk is full: enough to see why, small enough to fit.
FAILED_KEEP_ON_FULL_DISK = (RUN_LOG, MANIFEST, "result.json")
# hostctl's own temporary names inside an output directory: a report being swapped in, metrics.json being written.
_OWN_TEMP = re.compile(r"^\.(report\.[0-9a-f]{12}\.(tmp|old)|metrics\.json\.[0-9a-f]{32}\.tmp|.*\.hostctl-.*)$")


def is_own_temp(name: str) -> bool:
    return bool(_OWN_TEMP.match(name))


def is_mount_point(path: Path) -> bool:
    return path.is_dir() and os.path.ismount(path)


def aside_dir(output_dir: Path) -> Path:
    """Where the lock and the staging directory go: beside the output directory, or inside a mount point."""
    return output_dir if is_mount_point(output_dir) else output_dir.parent


def lock_path(output_dir: Path) -> Path:
    return aside_dir(output_dir) / f".{output_dir.name}{LOCK_MARK}"


# -- what hostctl may touch ---------------------------------------------------------------------------------------

def owned_paths(output_dir: Path, manifest_name: str = MANIFEST) -> tuple[set[str], set[str]] | None:
    """(files, top-level names) the previous run recorded as its own, or None when there is no readable manifest."""
    try:
        manifest = json.loads((output_dir / manifest_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    written = manifest.get("written")
    if isinstance(written, list) and all(isinstance(p, str) for p in written):
        return {p for p in written if _safe_rel(p)}, set()
    files = manifest.get("files")
    if isinstance(files, list) and all(isinstance(p, str) for p in files):
        return set(), {p for p in files if _safe_rel(p) and "/" not in p}  # older manifests: top-level names
    return None


def _safe_rel(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts


def foreign_entries(output_dir: Path) -> list[str]:
    """Relative paths in output_dir that no hostctl run wrote (hostctl's temporary names excepted)."""
    if not output_dir.is_dir():
        return []
    entries = []
    for root, dirs, files in os.walk(output_dir):
        rel_root = os.path.relpath(root, output_dir)
        rel = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        if not rel:
            dirs[:] = [d for d in dirs if not is_own_temp(d)]
            files = [f for f in files if not is_own_temp(f)]
        entries.extend(rel + name for name in files)
        entries.extend(rel + name + "/" for name in dirs if not os.listdir(os.path.join(root, name)))
    if not entries:
        return []
    owned = owned_paths(output_dir)
    if owned is None:
        return sorted(entries)
    files, top = owned
    return sorted(e for e in entries if e.rstrip("/") not in files and e.split("/", 1)[0] not in top)


def check_output_dir(output_dir: Path, inputs: Iterable[Path] = (), needed_bytes: int = 0) -> None:
    """Refuse, before any work, an output directory that a run could not use without losing something."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(output_dir, "output path exists and is not a directory", "Choose another --output-dir.")
    resolved = output_dir.resolve()
    for item in inputs:
        inp = item.resolve()
        if resolved == inp or resolved in inp.parents or inp in resolved.parents:
            relation = ("is" if resolved == inp else "contains" if resolved in inp.parents else "lies inside")
            raise InputError(output_dir, f"output directory {relation} the input {item}",
                             "Choose an --output-dir outside the inputs; hostctl never writes among its inputs.")
    if output_dir.is_dir():
        try:
            foreign = foreign_entries(output_dir)
        except OSError as exc:
            raise InputError(output_dir, f"cannot be read ({exc.strerror})", "Choose another --output-dir.") from exc
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputError(output_dir, f"output directory holds files that hostctl did not write ({shown})",
                             "Move them away or choose an empty or new --output-dir; hostctl replaces only the "
                             f"files its previous run listed in {MANIFEST}.")
        if not os.access(output_dir, os.W_OK | os.X_OK):
            raise InputError(output_dir, "output directory is not writable", "Choose an --output-dir you can write to.")
    ancestor = aside_dir(resolved) if resolved.is_dir() else resolved.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(ancestor, "directory is not writable (hostctl stages its results beside the output "
                         "directory)", "Choose an --output-dir whose parent you can write to.")
    probe = ancestor / f".hostctl-probe-{os.getpid()}.hostctl-tmp"
    try:  # access() says yes on /proc, /sys and some network file systems that refuse files all the same
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise InputError(ancestor, f"cannot hold the results ({exc.strerror})",
                         "Choose an --output-dir on an ordinary, writable file system.") from None
    check_free_space(ancestor, needed_bytes)


def check_free_space(path: Path, needed_bytes: int) -> None:
    """Refuse before any work when the disk holding path (or its nearest existing ancestor) is too small."""
    while not path.exists():
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < needed_bytes:
        raise InputError(path, f"has {_mb(free)} free, the run needs about {_mb(needed_bytes)}",
                         "Free some space or choose an --output-dir on another disk.")


def check_replaceable(output_dir: Path, names: Iterable[str], manifest_name: str) -> None:
    """For verbs that write a few named files among others (prepare): each may replace only a file it wrote."""
    owned = owned_paths(output_dir, manifest_name)
    files = owned[0] | owned[1] if owned else set()
    for name in names:
        if (output_dir / name).exists() and name not in files:
            raise InputError(output_dir / name, f"exists and was not written by hostctl (not listed in "
                             f"{manifest_name})", "Move it away, or choose another --output-dir; hostctl replaces "
                             "only files it wrote itself.")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def written_files(directory: Path) -> list[str]:
    """Every file under directory, as relative POSIX paths: what a manifest records as written."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())


# -- leftovers of dead runs ---------------------------------------------------------------------------------------

def sweep_leftovers(output_dir: Path) -> list[Path]:
    """Remove staging, old-results and report temp directories of runs that are gone. Call with the lock held."""
    removed = []
    places = [(aside_dir(output_dir), f".{output_dir.name}.hostctl-")]
    if output_dir.is_dir():
        places.append((output_dir, ""))
    for place, prefix in places:
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            path = place / name
            if not (name.startswith(prefix) and is_own_temp(name)) or name.endswith(LOCK_MARK):
                continue
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def sweep_payload_dirs(tmp: Path | None = None, dry_run: bool = False) -> list[Path]:
    """Remove (or only list) `hostctl-payload-<pid>-*` staging directories whose process is gone."""
    removed = []
    tmp = Path(tmp or tempfile.gettempdir())
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        match = re.match(r"^hostctl-payload-(\d+)-", name)
        path = tmp / name
        if not match:
            continue
        try:
            if path.lstat().st_uid != os.getuid() or _alive(int(match.group(1))):
                continue
        except OSError:
            continue
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_by_live_run(output_dir: Path) -> bool:
    """True when a running hostctl holds output_dir's lock (used by `hostctl clean`)."""
    path = lock_path(output_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# -- one run ------------------------------------------------------------------------------------------------------

class OutputLock:
    """An exclusive lock on one output directory, held by every verb that writes there; removed on release."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        self.path = lock_path(self.output_dir)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UsageError(f"{self.output_dir}: another hostctl run (pid {holder}) is writing to this output "
                                 "directory", "Wait for it to finish, or choose another --output-dir.") from None
            # The run that held it may have unlinked the file meanwhile: hold the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            try:
                self.path.unlink()  # while still locked: a run that opened it meanwhile re-checks the inode
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def record_written(output_dir: Path, rel_paths: Iterable[str]) -> None:
    """Add files a later step (hostctl evaluate) wrote to the manifest's list, so the next run may replace them."""
    manifest_path = output_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(manifest, dict):
        return
    owned = owned_paths(output_dir)
    if owned is None:
        return
    files, top = owned
    if top and not files:  # an older manifest: name its files one by one from now on
        files = {rel for rel in written_files(output_dir) if rel.split("/", 1)[0] in top}
    manifest["written"] = sorted(files | set(rel_paths) | {MANIFEST})
    tmp = output_dir / f".{MANIFEST}.hostctl-tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, manifest_path)


class Staging:
    def __init__(self, output_dir: Path, run_id: str) -> None:
        self.output_dir = output_dir.resolve()
        self.run_id = run_id
        self.aside = aside_dir(self.output_dir)
        self.run_dir = self.aside / f".{self.output_dir.name}{TMP_MARK}{run_id}"
        self.failed_dir: Path | None = None
        self.payload_started = False  # a run that failed before its payload started has nothing to keep
        self.disk_full = False
        self.swept: list[Path] = []
        self._lock = OutputLock(self.output_dir)
        self._committed = False

    def __enter__(self) -> Staging:
        self._lock.__enter__()
        try:
            self.swept = sweep_leftovers(self.output_dir)
            self.run_dir.mkdir(mode=0o755)
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def commit(self) -> None:
        """Replace the previous run's files with this run's, one rename each, run.json last."""
        out = self.output_dir
        if not out.exists():
            self.run_dir.rename(out)
            self._committed = True
            return
        foreign = set(foreign_entries(out))
        new = written_files(self.run_dir)
        clash = [p for p in new if p in foreign or any(p.startswith(f.rstrip("/") + "/") for f in foreign)]
        if clash:
            raise UsageError(f"{out}: {clash[0]} appeared in the output directory during the run; the new results "
                             f"were not moved in", "Move it away and run again; the previous results are intact.")
        owned = owned_paths(out) or (set(), set())
        trash = self.aside / f".{out.name}{OLD_MARK}{self.run_id}"
        trash.mkdir()
        old = [p for p in _owned_now(out, owned, foreign) if p != MANIFEST]
        for rel in old:
            (trash / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(out / rel, trash / rel)
        _prune_empty_dirs(out, {str(Path(rel).parent) for rel in old})
        for rel in new:
            if rel == MANIFEST:
                continue
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.run_dir / rel, out / rel)
        os.replace(self.run_dir / MANIFEST, out / MANIFEST)
        self._committed = True
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self._committed and self.run_dir.exists():
                self._keep_failed(isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
        finally:
            self._lock.__exit__()

    def shrink(self) -> None:
        """Keep only what says why the run failed: on a full disk, the partial outputs must not stay."""
        for path in self.run_dir.iterdir():
            if path.name not in FAILED_KEEP_ON_FULL_DISK:
                _remove(path)

    def _keep_failed(self, disk_full: bool) -> None:
        if not self.payload_started or not any(p.name != "job.json" for p in self.run_dir.iterdir()):
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        if disk_full or self.disk_full:
            self.shrink()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parent = self.output_dir.parent
        target = parent / f"{self.output_dir.name}{FAILED_MARK}{stamp}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = parent / f"{self.output_dir.name}{FAILED_MARK}{stamp}-{suffix}"
        try:
            shutil.move(str(self.run_dir), str(target))  # a rename, or a copy from inside a mount point
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        self.failed_dir = target


def _owned_now(out: Path, owned: tuple[set[str], set[str]], foreign: set[str]) -> list[str]:
    files, top = owned
    present = [rel for rel in written_files(out) if not is_own_temp(rel.split("/", 1)[0])]
    return [rel for rel in present if rel not in foreign and (rel in files or rel.split("/", 1)[0] in top)]


def _prune_empty_dirs(out: Path, rel_dirs: set[str]) -> None:
    for rel in sorted(rel_dirs, key=lambda r: r.count("/"), reverse=True):
        path = out / rel
        while rel not in ("", ".") and path != out:
            try:
                path.rmdir()
            except OSError:
                break
            path = path.parent
            rel = str(Path(rel).parent)
