"""The output-directory rule: hostctl deletes or replaces only files its previous run listed; nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tree_snapshot

from hostctl.errors import InputError, UsageError
from hostctl.staging import (
    Staging,
    check_output_dir,
    foreign_entries,
    lock_path,
    record_written,
    sweep_payload_dirs,
)


def previous_run(out: Path, files: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    """An output directory as a run left it: its files and a manifest listing them, plus `extra` unlisted files."""
    for rel, text in {**files, **(extra or {})}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / "run.json").write_text(json.dumps({"status": "succeeded", "written": sorted([*files, "run.json"])}))
    return out


def finish(stage: Staging, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (stage.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage.run_dir / rel).write_text(text)
    (stage.run_dir / "run.json").write_text(json.dumps({"written": sorted([*files, "run.json"])}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_replaces_exactly_what_the_previous_run_listed(tmp_path):
    out = previous_run(tmp_path / "out", {"a.txt": "old a", "report/x.png": "old x", "old_only.txt": "old"})
    with Staging(out, "r1") as stage:
        stage.payload_started = True
        finish(stage, {"a.txt": "new a", "report/y.png": "new y"})
        stage.commit()
    assert tree_snapshot(out) == {"a.txt": b"new a", "report/y.png": b"new y",
                                  "run.json": (out / "run.json").read_bytes()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no lock, staging or old-results left"


def test_unlisted_files_are_foreign_and_refused_before_the_run(tmp_path):
    out = previous_run(tmp_path / "out", {"quant_info.json": "{}"}, extra={"my_notes.txt": "keep", "sub/x": "keep"})
    assert foreign_entries(out) == ["my_notes.txt", "sub/x"]
    before = tree_snapshot(out)
    with pytest.raises(InputError, match=r"holds files that hostctl did not write \(my_notes.txt, sub/x\)"):
        check_output_dir(out)
    assert tree_snapshot(out) == before


def test_without_a_readable_manifest_everything_is_foreign(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded"}')  # no file list: hostctl cannot tell what it wrote
    (out / "state_dict.pt").write_text("weights")
    assert foreign_entries(out) == ["run.json", "state_dict.pt"]
    (out / "run.json").write_text("not json")
    assert foreign_entries(out) == ["run.json", "state_dict.pt"]


def test_older_manifests_name_top_level_entries(tmp_path):
    out = tmp_path / "out"
    (out / "report").mkdir(parents=True)
    (out / "report" / "index.html").write_text("x")
    (out / "metrics.json").write_text("{}")
    (out / "run.json").write_text(json.dumps({"files": ["metrics.json", "report", "run.json"]}))
    assert foreign_entries(out) == []
    (out / "notes.md").write_text("mine")
    assert foreign_entries(out) == ["notes.md"]


def test_a_file_that_appears_during_the_run_stops_the_commit_and_loses_nothing(tmp_path):
    out = previous_run(tmp_path / "out", {"a.txt": "old a"})
    with pytest.raises(UsageError, match="b.txt appeared in the output directory during the run"):
        with Staging(out, "r1") as stage:
            stage.payload_started = True
            finish(stage, {"a.txt": "new a", "b.txt": "new b"})
            (out / "b.txt").write_text("the user's")
            stage.commit()
    assert (out / "b.txt").read_text() == "the user's" and (out / "a.txt").read_text() == "old a"
    assert stage.failed_dir is not None and (stage.failed_dir / "b.txt").read_text() == "new b"


@pytest.mark.parametrize("relation", ["is", "contains", "lies inside"])
def test_output_dir_overlapping_an_input_is_refused(tmp_path, relation):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "state_dict.pt").write_text("w")
    out = {"is": inputs, "contains": tmp_path, "lies inside": inputs / "results"}[relation]
    link = tmp_path / "link"
    link.symlink_to(out)  # symlinks are resolved
    with pytest.raises(InputError, match=f"output directory {relation} the input"):
        check_output_dir(link, [inputs, inputs / "state_dict.pt"])


def test_no_lock_file_stays_and_a_second_run_is_refused_while_one_runs(tmp_path):
    out = tmp_path / "out"
    with Staging(out, "r1"):
        assert lock_path(out.resolve()).exists()
        with pytest.raises(UsageError, match=f"another hostctl run \\(pid {os.getpid()}\\)"):
            Staging(out, "r2").__enter__()
    assert not lock_path(out.resolve()).exists()


def test_a_failure_before_the_payload_started_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), Staging(out, "r1") as stage:
        (stage.run_dir / "run.json").write_text("{}")
        raise RuntimeError("--python /nonexistent")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_run_keeps_its_files_beside_the_output_dir_and_only_the_log_on_a_full_disk(tmp_path):
    out = tmp_path / "out"
    for disk_full in (False, True):
        with pytest.raises(RuntimeError), Staging(out, f"r{disk_full}") as stage:
            stage.payload_started = True
            finish(stage, {"run.log": "why", "quantization_test_preds.h5": "big"})
            stage.disk_full = disk_full
            raise RuntimeError("failed")
        kept = sorted(p.name for p in stage.failed_dir.iterdir())
        assert kept == (["run.json", "run.log"] if disk_full else ["quantization_test_preds.h5", "run.json", "run.log"])
    assert not out.exists()


def test_leftovers_of_dead_runs_are_swept_by_the_next_run(tmp_path):
    out = previous_run(tmp_path / "out", {"a.txt": "a"})
    for name in (".out.hostctl-tmp-20250101-000000-deadbeef", ".out.hostctl-old-20250101-000000-deadbeef"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "partial.h5").write_text("x")
    (out / ".report.0123456789ab.old").mkdir()
    (tmp_path / ".other.hostctl-tmp-1").mkdir()  # another output directory's: not ours to judge
    assert foreign_entries(out) == []  # hostctl's own temporary names are never the user's files
    with Staging(out, "r1") as stage:
        swept = sorted(p.name for p in stage.swept)
    assert swept == [".out.hostctl-old-20250101-000000-deadbeef", ".out.hostctl-tmp-20250101-000000-deadbeef",
                     ".report.0123456789ab.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.hostctl-tmp-1", "out"]


def test_payload_staging_dirs_of_dead_processes_are_swept(tmp_path):
    dead = tmp_path / f"hostctl-payload-{dead_pid()}-abc"
    alive = tmp_path / f"hostctl-payload-{os.getpid()}-abc"
    other = tmp_path / "hostctl-payload-notapid"
    for path in (dead, alive, other):
        path.mkdir()
    assert sweep_payload_dirs(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_files_evaluate_wrote_join_the_manifest(tmp_path):
    out = previous_run(tmp_path / "out", {"quant_info.json": "{}"})
    (out / "metrics.json").write_text("{}")
    assert foreign_entries(out) == ["metrics.json"]
    record_written(out, ["metrics.json"])
    assert foreign_entries(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "quant_info.json", "run.json"]


def test_unwritable_output_dir_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere; the read-only mount test covers this as root")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_output_dir(out)
    finally:
        out.chmod(0o755)


def test_not_enough_free_space_is_refused_before_the_run(tmp_path):
    st = os.statvfs(tmp_path)
    with pytest.raises(InputError, match="free, the run needs about"):
        check_output_dir(tmp_path / "out", needed_bytes=st.f_bavail * st.f_frsize * 2 + 10**9)


# -- mount points (root only: tmpfs) ------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(name: str, options: str = "size=16m") -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_mount_point_as_output_dir_works(tmp_path, tmpfs):
    out = previous_run(tmpfs("vol"), {"a.txt": "old"})
    with Staging(out, "r1") as stage:
        assert stage.run_dir.parent == out.resolve()  # staged inside: a mount point cannot be renamed
        stage.payload_started = True
        finish(stage, {"a.txt": "new"})
        stage.commit()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "run.json"]
    assert (out / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError), Staging(out, "r2") as stage:  # a failure inside it is kept beside it
        stage.payload_started = True
        finish(stage, {"run.log": "why"})
        raise RuntimeError
    assert stage.failed_dir.parent == tmp_path and (stage.failed_dir / "run.log").read_text() == "why"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "run.json"]


def test_a_read_only_mount_point_is_refused(tmpfs):
    out = tmpfs("ro", "size=1m,ro")
    with pytest.raises(InputError, match="not writable"):
        check_output_dir(out)
