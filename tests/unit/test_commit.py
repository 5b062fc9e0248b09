"""The move of a run's results into the output directory is recoverable at every rename (issue 24, cases 1-4).

Faults are injected at each rename the move makes, one run per rename: an I/O error, a signal, and a process
that dies there (as `kill -9` or power loss would leave it). Afterwards the output directory holds either the
previous results or the new ones, whole, and the error says which.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import run_hostctl, tree_snapshot

from hostctl.errors import Interrupted, RunFailed, UsageError
from hostctl.signals import trap_signals
from hostctl.staging import Staging, check_output_dir, foreign_entries, is_own_temp, sweep_leftovers

OLD = {"a.txt": "old a", "report/index.html": "old index", "report/x.png": "old x", "old_only.txt": "old"}
NEW = {"a.txt": "new a", "report/index.html": "new index", "report/y.png": "new y", "new_only.txt": "new"}
RUN_ID = "20261206-101500-0123abcd"


def previous_run(out: Path) -> dict[str, bytes]:
    for rel, text in OLD.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / "run.json").write_text(json.dumps({"run_id": "20261206-090000-00000000", "status": "succeeded",
                                              "written": sorted([*OLD, "run.json"])}))
    return tree_snapshot(out)


def stage_new(stage: Staging) -> None:
    stage.payload_started = True
    for rel, text in NEW.items():
        (stage.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage.run_dir / rel).write_text(text)
    (stage.run_dir / "run.json").write_text(json.dumps({"run_id": stage.run_id, "status": "succeeded",
                                                        "written": sorted([*NEW, "run.json"])}))


def new_tree(out: Path) -> dict[str, bytes]:
    return {**{rel: text.encode() for rel, text in NEW.items()}, "run.json": (out / "run.json").read_bytes()}


@contextmanager
def on_rename(k: int, action):
    """Call action(src, dst) instead of the k-th rename (os.rename or os.replace, 0-based) from here on."""
    real = {"rename": os.rename, "replace": os.replace}
    calls = []

    def wrap(kind):
        def renamed(src, dst, *args, **kwargs):
            calls.append((src, dst))
            if len(calls) - 1 == k:
                return action(real[kind], src, dst)
            return real[kind](src, dst, *args, **kwargs)
        return renamed

    os.rename, os.replace = wrap("rename"), wrap("replace")
    try:
        yield calls
    finally:
        os.rename, os.replace = real["rename"], real["replace"]


def renames_of_one_commit(tmp_path: Path) -> int:
    out = tmp_path / "count" / "out"
    out.mkdir(parents=True)
    previous_run(out)
    with Staging(out, RUN_ID) as stage:
        stage_new(stage)
        with on_rename(-1, None) as calls:
            stage.commit()
    assert tree_snapshot(out) == new_tree(out)
    return len(calls)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "out" and ".failed-" not in p.name)


def test_an_io_error_at_any_rename_leaves_the_earlier_results_whole(tmp_path):
    total = renames_of_one_commit(tmp_path)
    assert total >= len(OLD) + len(NEW) + 1  # the journal, every file aside and in, run.json

    def eio(rename, src, dst):
        raise OSError(errno.EIO, "Input/output error", str(dst))

    for k in range(total):
        parent = tmp_path / f"eio-{k}"
        out = parent / "out"
        out.mkdir(parents=True)
        before = previous_run(out)
        with pytest.raises(RunFailed) as failed:
            with Staging(out, RUN_ID) as stage:
                stage_new(stage)
                with on_rename(k, eio):
                    stage.commit()
        assert tree_snapshot(out) == before, f"rename {k}"
        assert "the move was undone: the earlier results are intact" in failed.value.message, failed.value.message
        assert stage.failed_dir is not None and (stage.failed_dir / "new_only.txt").read_text() == "new"
        assert leftovers(parent) == [], f"rename {k}"


def test_a_signal_during_the_move_waits_for_it_and_says_which_results_are_in_place(tmp_path):
    total = renames_of_one_commit(tmp_path)

    def sigterm(rename, src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
        return rename(src, dst)

    for k in range(total):
        parent = tmp_path / f"sig-{k}"
        out = parent / "out"
        out.mkdir(parents=True)
        previous_run(out)
        with pytest.raises(Interrupted) as interrupted:
            with trap_signals(), Staging(out, RUN_ID) as stage:
                stage_new(stage)
                with on_rename(k, sigterm):
                    stage.commit()
        assert tree_snapshot(out) == new_tree(out), f"rename {k}"
        assert interrupted.value.exit_code == 143
        assert "the new results are complete in" in interrupted.value.message
        assert leftovers(parent) == [], f"rename {k}"


def test_a_signal_during_a_failed_move_does_not_claim_more_than_is_true(tmp_path):
    parent = tmp_path / "p"
    out = parent / "out"
    out.mkdir(parents=True)
    before = previous_run(out)

    def sigterm_then_eio(rename, src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
        raise OSError(errno.EIO, "Input/output error", str(dst))

    with pytest.raises(Interrupted) as interrupted:
        with trap_signals(), Staging(out, RUN_ID) as stage:
            stage_new(stage)
            with on_rename(5, sigterm_then_eio):
                stage.commit()
    assert tree_snapshot(out) == before
    assert "the move was undone: the earlier results are intact" in interrupted.value.message


CRASH = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = sys.argv[3:]
    from hostctl.staging import Staging
    out, k = sys.argv[1], int(sys.argv[2])
    calls = []
    real = {"rename": os.rename, "replace": os.replace}
    def wrap(kind):
        def renamed(src, dst, *a, **kw):
            calls.append(src)
            if len(calls) - 1 == k:
                os._exit(9)  # as kill -9 or a power cut: no finally, no handler
            return real[kind](src, dst, *a, **kw)
        return renamed
    with Staging(__import__("pathlib").Path(out), RUN_ID) as stage:
        stage.payload_started = True
        for rel, text in NEW.items():
            (stage.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage.run_dir / rel).write_text(text)
        (stage.run_dir / "run.json").write_text(json.dumps({"run_id": stage.run_id, "written": []}))
        os.rename, os.replace = wrap("rename"), wrap("replace")
        stage.commit()
""").replace("RUN_ID", repr(RUN_ID)).replace("NEW.items", f"{NEW!r}.items")


def test_a_process_that_dies_at_any_rename_is_recovered_by_the_next_run(tmp_path):
    total = renames_of_one_commit(tmp_path)
    paths = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
    for k in range(total):
        parent = tmp_path / f"crash-{k}"
        out = parent / "out"
        out.mkdir(parents=True)
        before = previous_run(out)
        proc = subprocess.run([sys.executable, "-c", CRASH, str(out), str(k), *paths], capture_output=True, text=True)
        assert proc.returncode == 9, proc.stderr
        # The next run recovers under its lock before anything else, then sweeps what is left.
        with Staging(out, "20261206-110000-feedbeef") as stage:
            assert tree_snapshot(out) == before, f"rename {k}: {sorted(tree_snapshot(out))}"
            swept = sorted(p.name for p in stage.swept)
        assert leftovers(parent) == [], f"rename {k}: {swept}"


@contextmanager
def failing_disk(out: Path, at: int):
    """The disk fails on the at-th rename (0-based) and, while state["on"], on every rename back into out/."""
    real, state = os.rename, {"on": True, "calls": 0}

    def rename(src, dst, *args, **kwargs):
        state["calls"] += 1
        back = ".hostctl-old-" in str(src) and str(dst).startswith(str(out))
        if state["calls"] - 1 == at or (state["on"] and back):
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst, *args, **kwargs)

    os.rename = rename
    try:
        yield state
    finally:
        os.rename = real


def test_a_move_that_cannot_be_undone_keeps_the_files_and_names_them(tmp_path):
    parent = tmp_path / "p"
    out = parent / "out"
    out.mkdir(parents=True)
    before = previous_run(out)
    with pytest.raises(RunFailed) as failed:
        with Staging(out, RUN_ID) as stage:
            stage_new(stage)
            with failing_disk(out, at=5):  # os.rename only: every old file is aside, one new file is in
                stage.commit()
    trash = parent / f".out.hostctl-old-{RUN_ID}"
    assert ("4 earlier file(s) could not be put back (a.txt, old_only.txt, report/index.html) and are kept in "
            f"{trash}") in failed.value.message
    assert f"hostctl clean --output-dir {out}" in failed.value.hint
    assert (trash / "a.txt").read_text() == "old a"
    # Neither the next run nor its sweep may drop them while they cannot be put back...
    with failing_disk(out, at=-1):
        with pytest.raises(UsageError, match="cannot be put back"):
            with Staging(out, "20261206-110000-feedbeef"):
                pass
    assert (trash / "a.txt").read_text() == "old a"
    # ...and once the disk works again, the next run puts them back first.
    with Staging(out, "20261206-120000-feedbeef"):
        assert tree_snapshot(out) == before
    assert not trash.exists()


def test_a_link_in_the_output_dir_is_refused_before_the_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous_run(out)
    users = tmp_path / "my-site"
    users.mkdir()
    (users / "index.html").write_text("the user's page")
    (out / "report" / "index.html").unlink()
    (out / "report" / "x.png").unlink()
    (out / "report").rmdir()
    (out / "report").symlink_to(users)
    with pytest.raises(UsageError, match=r"out/report: is a symbolic link inside the output directory"):
        check_output_dir(out)
    (out / "report").unlink()
    (out / "a.txt").unlink()
    (out / "a.txt").symlink_to(users / "index.html")  # a link under a name the previous run listed
    with pytest.raises(UsageError, match=r"out/a.txt: is a symbolic link"):
        check_output_dir(out)


def test_a_link_that_appears_during_the_run_stops_the_move(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = previous_run(out)
    users = tmp_path / "my-site"
    users.mkdir()
    (users / "index.html").write_text("the user's page")
    with pytest.raises(UsageError, match=r"report \(a symbolic link\) appeared in the output directory during the run"):
        with Staging(out, RUN_ID) as stage:
            stage_new(stage)
            for rel in ("report/index.html", "report/x.png"):
                (out / rel).unlink()
            (out / "report").rmdir()
            (out / "report").symlink_to(users)
            stage.commit()
    assert sorted(p.name for p in users.iterdir()) == ["index.html"]
    assert (users / "index.html").read_text() == "the user's page"
    assert {k: v for k, v in tree_snapshot(out).items() if not k.startswith("report")} == {
        k: v for k, v in before.items() if not k.startswith("report")}


def test_the_sweep_takes_exactly_the_names_hostctl_generates(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous_run(out)
    ours_beside = [f".out.hostctl-tmp-{RUN_ID}", f".out.hostctl-old-{RUN_ID}"]
    ours_inside = [".report.0123456789ab.old", ".metrics.json." + "0" * 32 + ".tmp", ".run.json.hostctl-tmp-42"]
    users_beside = [".out.hostctl-config", ".out.hostctl-tmp-mine", ".out.hostctl-old-20250101-dead"]
    users_inside = [".notes.hostctl-keep", ".report.backup.old", ".out.hostctl-tmp-" + RUN_ID]
    for name in ours_beside + users_beside:
        (tmp_path / name).mkdir()
    for name in ours_inside + users_inside:
        (out / name).write_text("x")
    assert all(is_own_temp(n, "out") for n in ours_beside) and not any(is_own_temp(n, "out") for n in users_beside)
    # a user's file in the output directory is the user's, whatever its name: refused, never swept
    assert foreign_entries(out) == sorted(users_inside)
    removed = sweep_leftovers(out)
    assert sorted(p.name for p in removed) == sorted(ours_beside + ours_inside)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *users_beside])
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(users_inside)


def test_clean_sweeps_leftovers_and_recovers_a_move_without_a_docker_engine(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = previous_run(out)
    # a run that died half-way through its move: two old files aside, one new file in
    code = CRASH
    paths = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
    assert subprocess.run([sys.executable, "-c", code, str(out), "4", *paths]).returncode == 9
    assert tree_snapshot(out) != before
    (tmp_path / ".out.hostctl-tmp-20250101-000000-deadbeef").mkdir()
    proc = run_hostctl(["clean", "--output-dir", str(out), "--json"],
                       env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert f"{tmp_path}/.out.hostctl-tmp-20250101-000000-deadbeef" in report["run leftovers"]
    assert "containers" in report["not_checked"]
    assert "containers and requirement caches not checked" in proc.stderr
    assert tree_snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_an_output_path_that_is_a_symlink_loop_is_one_line_exit_2(tmp_path, loop):
    out = tmp_path / "out"
    if loop == "self":
        out.symlink_to(out)  # ln -s out out
    else:
        (tmp_path / "b").symlink_to(out)  # a -> b -> a
        out.symlink_to(tmp_path / "b")
    with pytest.raises(UsageError) as error:
        check_output_dir(out)
    assert error.value.exit_code == 2 and "cannot be resolved" in error.value.message
    assert "\n" not in error.value.message
