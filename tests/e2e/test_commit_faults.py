"""Faults during the last step of a real `hostctl quantize` run, injected with strace (issue 24, cases 1 and 2).

strace counts the renames of each process it traces, so `inject=rename:...:when=K` hits the K-th rename of
hostctl's main process: the moves of the commit are found by one traced run, then an I/O error is injected at
several of them in turn, and a SIGTERM is sent while the move is slowed down. tests/unit/test_commit.py covers
every rename of the move in-process; this tier proves the real CLI path (threads, signal trap, messages).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_inputs, source_path, tiny_args, tiny_unet, tree_snapshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it as root)"),
]


def _strace(out: Path, inputs, *inject: str, trace_log: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=source_path(os.environ.get("PYTHONPATH")))
    log = ["-o", str(trace_log)] if trace_log else ["-o", os.devnull]
    cmd = ["strace", "-f", "-qq", *log, "-e", "trace=rename", *inject, sys.executable, "-m", "hostctl",
           *tiny_args(inputs, out, "--quantizer", "portable")]
    return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _commit_renames(trace: Path) -> dict[str, int]:
    """1-based indexes, among the renames of hostctl's main process, of the journal, first aside, first in, run.json."""
    lines = [line for line in trace.read_text().splitlines() if re.match(r"^\d+ +rename\(", line)]
    main = next(line.split()[0] for line in lines if ".hostctl-journal-" in line)
    mine = [line for line in lines if line.split()[0] == main]
    journal = next(i for i, line in enumerate(mine, 1) if ".hostctl-journal-" in line)
    aside = next(i for i, line in enumerate(mine, 1) if ".hostctl-old-" in line)
    moved_in = next(i for i, line in enumerate(mine, 1) if i > aside and ".hostctl-tmp-" in line.split(",")[0])
    commit = next(i for i, line in enumerate(mine, 1) if re.search(r"hostctl-tmp-[^/]+/run\.json\", ", line))
    return {"journal": journal, "first aside": aside, "first in": moved_in, "run.json": commit}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory):
    """Inputs, an output directory holding a successful run, and where the commit's renames fall."""
    base = tmp_path_factory.mktemp("commit-faults")
    inputs = make_inputs(base / "in", tiny_unet())
    out = base / "out"
    trace = base / "trace"
    for _ in range(2):  # the second run replaces the first's files: a full commit, traced
        proc = _strace(out, inputs, trace_log=trace)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return inputs, out, _commit_renames(trace)


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.hostctl-"))


@pytest.mark.parametrize("where", ["journal", "first aside", "first in", "run.json"])
def test_an_io_error_during_the_move_leaves_the_earlier_results_whole(earlier_run, where):
    inputs, out, renames = earlier_run
    before = tree_snapshot(out)
    proc = _strace(out, inputs, "-e", f"inject=rename:error=EIO:when={renames[where]}")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "the move was undone: the earlier results are intact" in err
    assert tree_snapshot(out) == before
    assert _beside(out) == []


def test_sigterm_during_the_move_waits_for_it_and_says_the_new_results_are_in_place(earlier_run):
    inputs, out, renames = earlier_run
    before = json.loads((out / "run.json").read_text())
    # every rename from the journal on takes 0.3 s: the move lasts seconds, and the signal comes in the middle
    proc = _strace(out, inputs, "-e", f"inject=rename:delay_enter=300000:when={renames['journal']}+")
    lock = out.parent / f".{out.name}.hostctl.lock"
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(f".{out.name}.hostctl-old-") for p in out.parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(int(lock.read_text()), signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM; it arrived as the run finished: the new results are complete in" in err
    after = json.loads((out / "run.json").read_text())
    assert after["run_id"] != before["run_id"] and after["status"] == "succeeded"
    assert sorted(tree_snapshot(out)) == sorted(after["written"])
    assert _beside(out) == []
