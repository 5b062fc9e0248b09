"""The last step of a run, recoverable at every instant: moving its files into the output directory.

The move is a plan written down before the first rename (a journal beside the output directory, synced to disk):
the previous run's files go aside into `.<name>.hostctl-old-<run id>/`, the new files come in from the staging
directory, and `run.json` is replaced last. That last rename is the commit point: before it the previous results
are the ones `run.json` describes, after it the new ones are. Whatever stops the move before that point (an I/O
error, a signal, a killed process, power loss), `roll_back` puts every file back where the plan found it; the
run that failed does that at once, and the next run into the same output directory, or `hostctl clean`, does it
for a run that died (`recover`). After the commit point the same call only finishes the clean-up. A file that
cannot be put back stays where it is, with the journal that names it: nothing of the user's is ever swept.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

JOURNAL_MARK = ".hostctl-journal-"
MANIFEST = "run.json"


@dataclass(frozen=True)
class Move:
    run_id: str
    output_dir: str
    run_dir: str  # the staging directory the new files come from
    trash: str  # where the previous run's files wait until the commit point
    old: tuple[str, ...]  # the previous run's files (relative paths) that go aside, run.json excepted
    new: tuple[str, ...]  # this run's files, run.json excepted (it is renamed last)

    @property
    def journal(self) -> Path:
        out = Path(self.output_dir)
        return journal_dir(out) / f".{out.name}{JOURNAL_MARK}{self.run_id}.json"

    def save(self) -> None:
        """Write the journal durably before anything moves: after power loss it is what recovery reads."""
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            try:
                os.write(fd, json.dumps(asdict(self), indent=1).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.journal)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _sync_dir(self.journal.parent)

    def apply(self) -> None:
        """Old files aside, new files in, run.json last. Raises on the first failure; `roll_back` undoes."""
        out, run_dir, trash = Path(self.output_dir), Path(self.run_dir), Path(self.trash)
        trash.mkdir(exist_ok=True)
        for rel in self.old:
            (trash / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(out / rel, trash / rel)
        _prune_empty_dirs(out, {str(Path(rel).parent) for rel in self.old})
        for rel in self.new:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(run_dir / rel, out / rel)
        os.replace(run_dir / MANIFEST, out / MANIFEST)  # the commit point
        _sync_dir(out)

    def committed(self) -> bool:
        """Whether the output directory's run.json is this run's: the commit point was passed."""
        try:
            manifest = json.loads((Path(self.output_dir) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("run_id") == self.run_id

    def roll_back(self) -> list[str]:
        """Put the new files back into the staging directory and the old ones back into the output directory.

        Returns the old files that are still aside (in `trash`); the journal stays while there are any."""
        out, run_dir, trash = Path(self.output_dir), Path(self.run_dir), Path(self.trash)
        for rel in reversed(self.new):
            if os.path.lexists(out / rel) and not os.path.lexists(run_dir / rel):
                try:
                    (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(out / rel, run_dir / rel)
                except OSError:
                    pass  # the old file of that name cannot come back then: it is reported below
        _prune_empty_dirs(out, {str(Path(rel).parent) for rel in self.new})
        stranded = []
        for rel in self.old:
            if not os.path.lexists(trash / rel):
                continue
            try:
                if os.path.lexists(out / rel):
                    raise FileExistsError(rel)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.rename(trash / rel, out / rel)
            except OSError:
                stranded.append(rel)
        if not stranded:
            self.finish(keep_trash=False)
        return stranded

    def finish(self, keep_trash: bool = False) -> None:
        """After the commit point, or a complete roll-back: the journal goes, then what it named."""
        try:
            self.journal.unlink()
        except FileNotFoundError:
            pass
        _sync_dir(self.journal.parent)
        if not keep_trash:
            shutil.rmtree(self.trash, ignore_errors=True)


def journal_dir(output_dir: Path) -> Path:
    """Beside the output directory, or inside it when it is a mount point (as its staging directory is)."""
    return output_dir if output_dir.is_dir() and os.path.ismount(output_dir) else output_dir.parent


def pending(output_dir: Path) -> list[Move]:
    """The moves into output_dir that a run left unfinished (only dead runs: call with the output lock held)."""
    moves = []
    place = journal_dir(output_dir)
    prefix = f".{output_dir.name}{JOURNAL_MARK}"
    try:
        names = sorted(os.listdir(place))
    except OSError:
        return []
    for name in names:
        if not name.startswith(prefix):
            continue
        if name.endswith(".json.tmp"):  # the journal was still being written: nothing had moved yet
            (place / name).unlink(missing_ok=True)
            continue
        try:
            data = json.loads((place / name).read_text(encoding="utf-8"))
            move = Move(**{**data, "old": tuple(data["old"]), "new": tuple(data["new"])})
        except (OSError, ValueError, TypeError, KeyError):
            continue  # not a journal hostctl wrote: leave it alone
        if Path(move.output_dir) == output_dir and move.journal.name == name:
            moves.append(move)
    return moves


def recover(output_dir: Path) -> list[tuple[Move, list[str]]]:
    """Finish or undo every move a dead run left; returns those that left files aside, with the files."""
    stuck = []
    for move in pending(output_dir):
        if move.committed():
            move.finish()
            continue
        stranded = move.roll_back()
        if stranded:
            stuck.append((move, stranded))
    return stuck


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
