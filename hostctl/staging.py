"""Results appear in the output directory only when a run succeeded.

A run writes into a hidden directory beside the output directory, under a lock that keeps a second run off the
same output directory. On success the finished directory replaces the old results in two renames; on failure
or interruption it is kept as `<name>.failed-<time>` for inspection (or removed when it holds nothing useful),
and the previous results are never touched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from types import TracebackType

from hostctl.errors import UsageError

TMP_MARK = ".hostctl-tmp-"
OLD_MARK = ".hostctl-old-"
FAILED_MARK = ".failed-"


def lock_path(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.hostctl.lock"


class Staging:
    def __init__(self, output_dir: Path, run_id: str) -> None:
        self.output_dir = output_dir.resolve()
        self.run_id = run_id
        self.run_dir = self.output_dir.parent / f".{self.output_dir.name}{TMP_MARK}{run_id}"
        self.failed_dir: Path | None = None
        self._lock_fd: int | None = None
        self._committed = False

    def __enter__(self) -> Staging:
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.output_dir), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"{self.output_dir}: another hostctl run (pid {holder}) is writing to this output "
                             "directory", "Wait for it to finish, or choose another --output-dir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        try:
            self.run_dir.mkdir(mode=0o755)
        except BaseException:
            self._unlock()
            raise
        return self

    def commit(self) -> None:
        """Replace the previous results with this run's, in two renames."""
        old = None
        if self.output_dir.exists():
            old = self.output_dir.parent / f".{self.output_dir.name}{OLD_MARK}{self.run_id}"
            self.output_dir.rename(old)
        self.run_dir.rename(self.output_dir)
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self._committed and self.run_dir.exists():
                self._keep_failed()
        finally:
            self._unlock()

    def _keep_failed(self) -> None:
        useful = [p for p in self.run_dir.iterdir() if p.name != "job.json"]
        if not useful:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.output_dir.parent / f"{self.output_dir.name}{FAILED_MARK}{stamp}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.output_dir.parent / f"{self.output_dir.name}{FAILED_MARK}{stamp}-{suffix}"
        self.run_dir.rename(target)
        self.failed_dir = target

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
