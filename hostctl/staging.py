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

from hostctl.errors import InputError, Interrupted, RunFailed, UsageError
from hostctl.journal import Move, recover
from hostctl.signals import deferred

MANIFEST = "run.json"
RUN_LOG = "run.log"
TMP_MARK = ".hostctl-tmp-"
OLD_MARK = ".hostctl-old-"
LOCK_MARK = ".hostctl.lock"
FAILED_MARK = ".failed-"
# Files a failed run keeps when the disk is full: enough to see why, small enough to fit.
FAILED_KEEP_ON_FULL_DISK = (RUN_LOG, MANIFEST, "result.json")
# A run's id: staged_run's time.strftime("%Y%m%d-%H%M%S-") + 8 hex digits.
RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{8}"
# hostctl's own temporary names inside an output directory, exactly as it generates them: a report being swapped
# in (report.py), metrics.json being written (evaluate.py), run.json being extended (record_written).
_OWN_INSIDE = re.compile(r"^\.(report\.[0-9a-f]{12}\.(tmp|old)|metrics\.json\.[0-9a-f]{32}\.tmp|"
                         r"run\.json\.hostctl-tmp-\d+)$")


def _own_beside(output_name: str) -> re.Pattern[str]:
    """Names a run of output_name puts beside it (inside it when it is a mount point): staging, old results,
    the commit's journal. The lock is not among them: only its holder removes it."""
    name = re.escape(output_name)
    return re.compile(rf"^\.{name}\.hostctl-(tmp|old)-{RUN_ID}$|^\.{name}\.hostctl-journal-{RUN_ID}\.json(\.tmp)?$")


def is_own_temp(name: str, output_name: str | None = None) -> bool:
    """Whether name is one hostctl generates inside an output directory (or beside output_name, when given)."""
    return bool(_OWN_INSIDE.match(name) or (output_name is not None and _own_beside(output_name).match(name)))


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
    return sorted(e for e, _ in _entries(output_dir))


def links(output_dir: Path) -> list[str]:
    """Relative paths of the symbolic links in output_dir: hostctl never writes one, nor through one."""
    return sorted(e for e, is_link in _entries(output_dir) if is_link)


def _entries(output_dir: Path) -> list[tuple[str, bool]]:
    """(relative path, is a symbolic link) of every foreign entry; a link is foreign whatever its name."""
    if not output_dir.is_dir():
        return []
    entries, found_links = [], []
    mount = is_mount_point(output_dir)
    for root, dirs, files in os.walk(output_dir):  # never follows a link
        rel_root = os.path.relpath(root, output_dir)
        rel = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        if not rel:
            own = (lambda n: is_own_temp(n, output_dir.name)) if mount else is_own_temp
            dirs[:] = [d for d in dirs if not own(d)]
            files = [f for f in files if not own(f)]
        for name in files + dirs:
            if os.path.islink(os.path.join(root, name)):
                found_links.append(rel + name)
        dirs[:] = [d for d in dirs if rel + d not in found_links]
        entries.extend(rel + name for name in files if rel + name not in found_links)
        entries.extend(rel + name + "/" for name in dirs if not os.listdir(os.path.join(root, name)))
    result = [(e, True) for e in found_links]
    if not entries:
        return result
    owned = owned_paths(output_dir)
    if owned is None:
        return result + [(e, False) for e in entries]
    files, top = owned
    return result + [(e, False) for e in entries if e.rstrip("/") not in files and e.split("/", 1)[0] not in top]


def check_output_dir(output_dir: Path, inputs: Iterable[Path] = (), needed_bytes: int = 0) -> None:
    """Refuse, before any work, an output directory that a run could not use without losing something."""
    try:
        resolved = output_dir.resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13, OSError after)
        raise InputError(output_dir, f"cannot be resolved ({exc})", "Choose another --output-dir.") from None
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(output_dir, "output path exists and is not a directory", "Choose another --output-dir.")
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
        linked = links(output_dir)
        if linked:
            raise InputError(output_dir / linked[0], "is a symbolic link inside the output directory; hostctl writes "
                             "only files it creates, never through a link", f"Remove the link (rm "
                             f"'{output_dir / linked[0]}') or choose another --output-dir.")
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

def check_recovered(output_dir: Path) -> None:
    """Finish or undo the move of a run that died during it (hostctl/journal.py); call with the lock held.

    Refuses (exit 2) while earlier files cannot be put back: they stay where they are, and are named."""
    stuck = recover(output_dir)
    if stuck:
        move, stranded = stuck[0]
        raise UsageError(f"{output_dir}: a run that stopped while moving its results in left {len(stranded)} earlier "
                         f"file(s) that cannot be put back ({', '.join(stranded[:3])}); they are kept in "
                         f"{move.trash}", f"Move them back into {output_dir} by hand, remove {move.journal}, and "
                         "run again; `hostctl clean --output-dir` retries putting them back.")


def leftovers(output_dir: Path) -> list[Path]:
    """hostctl's own temporary files and directories beside and inside output_dir (the lock excepted)."""
    found = []
    places = [(aside_dir(output_dir), output_dir.name)]
    if output_dir.is_dir():
        places.append((output_dir, None))
    for place, beside in places:
        try:
            names = sorted(os.listdir(place))
        except OSError:
            continue
        found += [place / name for name in names if is_own_temp(name, beside) and (beside or name[:1] == ".")]
    return found


def sweep_leftovers(output_dir: Path) -> list[Path]:
    """Remove staging, old-results and report temp directories of runs that are gone. Call with the lock held,
    after check_recovered (a journal it could not resolve keeps what it names)."""
    removed = leftovers(output_dir)
    for path in removed:
        _remove(path)
    return removed


def _failed_pattern(output_name: str) -> re.Pattern[str]:
    """The names Staging._keep_failed gives: `<name>.failed-<YYYYmmdd-HHMMSS>`, `-<n>` when that one was taken."""
    return re.compile(rf"^{re.escape(output_name)}{re.escape(FAILED_MARK)}(\d{{8}}-\d{{6}})(?:-(\d+))?$")


def failed_runs(output_dir: Path) -> list[Path]:
    """output_dir's failed-run directories, oldest first: named as hostctl names them, beside output_dir, real
    directories (not links), each holding the run.json of a failed or interrupted hostctl run."""
    pattern = _failed_pattern(output_dir.name)
    found = []
    try:
        names = os.listdir(output_dir.parent)
    except OSError:
        return []
    for name in names:
        match = pattern.match(name)
        path = output_dir.parent / name
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict) or manifest.get("status") not in ("failed", "interrupted") \
                or not re.fullmatch(RUN_ID, str(manifest.get("run_id", ""))):
            continue
        found.append((match.group(1), int(match.group(2) or 1), path))
    return [path for _, _, path in sorted(found)]


def old_failed_runs(output_dir: Path) -> list[Path]:
    """The failed-run directories older than the newest one, which `hostctl clean` removes (the newest stays:
    it is the one a user is most likely still reading)."""
    return failed_runs(output_dir)[:-1]


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
        self.commit_error: RunFailed | None = None  # what a failed move left, for a signal that arrived meanwhile

    def __enter__(self) -> Staging:
        self._lock.__enter__()
        try:
            check_recovered(self.output_dir)
            self.swept = sweep_leftovers(self.output_dir)
            self.run_dir.mkdir(mode=0o755)
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def commit(self) -> None:
        """Replace the previous run's files with this run's, run.json last, recoverably (hostctl/journal.py).

        Signals wait until the move is done or undone, so that it never stops half-way; one sent meanwhile
        arrives right after, and its message then says which results are in place."""
        try:
            with deferred():
                self._move_in()
        except Interrupted as exc:
            if self._committed:
                raise Interrupted(exc.signum, "it arrived as the run finished: the new results are complete in "
                                              f"{self.output_dir}") from exc
            if self.commit_error is not None:
                raise Interrupted(exc.signum, f"before it, {self.commit_error.message}") from exc
            raise

    def _move_in(self) -> None:
        out = self.output_dir
        if not out.exists():
            self.run_dir.rename(out)
            self._committed = True
            return
        foreign = set(foreign_entries(out))
        new = written_files(self.run_dir)
        clash = sorted(f.rstrip("/") for f in foreign for p in new if p == f or p.startswith(f.rstrip("/") + "/"))
        if clash:
            what = " (a symbolic link)" if os.path.islink(out / clash[0]) else ""
            raise UsageError(f"{out}: {clash[0]}{what} appeared in the output directory during the run; the new "
                             "results were not moved in", "Move it away and run again; the previous results are "
                             "intact.")
        owned = owned_paths(out) or (set(), set())
        trash = self.aside / f".{out.name}{OLD_MARK}{self.run_id}"
        move = Move(self.run_id, str(out), str(self.run_dir), str(trash),
                    tuple(p for p in _owned_now(out, owned, foreign) if p != MANIFEST),
                    tuple(p for p in new if p != MANIFEST))
        try:
            move.save()
            move.apply()
        except OSError as exc:
            stranded = move.roll_back()
            self.commit_error = _commit_failed(exc, move, stranded)
            raise self.commit_error from exc
        self._committed = True
        move.finish()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def committed(self) -> bool:
        return self._committed

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


def _commit_failed(exc: OSError, move: Move, stranded: list[str]) -> RunFailed:
    what = (exc.strerror or str(exc)).lower()
    where = f" on {exc.filename}" if exc.filename else ""
    if not stranded:
        return RunFailed(f"{what}{where} while moving the results into {move.output_dir}; the move was undone: the "
                         "earlier results are intact and the new ones are kept in the failed-run directory",
                         "Check the disk, then run again.")
    return RunFailed(f"{what}{where} while moving the results into {move.output_dir}; {len(stranded)} earlier "
                     f"file(s) could not be put back ({', '.join(stranded[:3])}) and are kept in {move.trash}",
                     f"Run `hostctl clean --output-dir {move.output_dir}` to retry putting them back, or move them "
                     "back by hand.")


def _owned_now(out: Path, owned: tuple[set[str], set[str]], foreign: set[str]) -> list[str]:
    files, top = owned
    present = [rel for rel in written_files(out) if not is_own_temp(rel.split("/", 1)[0])]
    return [rel for rel in present if rel not in foreign and (rel in files or rel.split("/", 1)[0] in top)]
