"""Issue 24, cases 12 and 14, on the real CLI in a subprocess: a model that writes to stdout when imported leaves
the --json summary alone, and a signal while hostctl starts (imports, validation) ends it with one `error:` line,
the JSON summary and the signal's exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_inputs, run_hostctl, source_path, tiny_args, tiny_unet, tree_snapshot

pytestmark = pytest.mark.slow

LOUD = '''
import os
import sys

from torch import nn

print("print() at import")
os.write(1, b"a write to file descriptor 1 at import\\n")
sys.stdout.flush()


class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        print("print() in the constructor")
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return self.conv(x)
'''


class Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)


def test_model_that_prints_at_import_leaves_stdout_to_the_json(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "loud.py").write_text(LOUD)
    inputs = make_inputs(tmp_path / "inputs", Conv())
    proc = run_hostctl(tiny_args(inputs, tmp_path / "out", "--quantizer", "portable", "--model", "loud:Net",
                                 "--model-path", str(models), "--json"),
                       env={"HOSTCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "succeeded"  # the whole of stdout is the summary
    assert "print() at import" in proc.stderr and "a write to file descriptor 1 at import" in proc.stderr
    assert "print() in the constructor" in (tmp_path / "out" / "run.log").read_text()  # the payload's, logged


BATCH_DEPENDENT = '''
from torch import nn


class Net(nn.Module):
    """Right on the validation's probe (a batch of one), two classes short on the payload's batches."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        out = self.conv(x)
        return out if x.shape[0] == 1 else out[:, :1]
'''


def test_predictions_that_cannot_be_evaluated_fail_the_run_not_the_usage(tmp_path):
    """What the probe cannot see is found after the run: exit 1 (the run failed), not 2 (bad usage, before any
    work), and the message names the file, not a staging path that is gone by then."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "batchy.py").write_text(BATCH_DEPENDENT)
    inputs = make_inputs(tmp_path / "inputs", Conv())
    proc = run_hostctl(tiny_args(inputs, tmp_path / "out", "--quantizer", "portable", "--model", "batchy:Net",
                                 "--model-path", str(models), "--json"),
                       env={"HOSTCTL_CACHE_DIR": str(tmp_path / "cache")})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr
    assert len(errors) == 1 and "the predictions cannot be evaluated: quantization_test_preds.h5:" in errors[0]
    assert ".hostctl-tmp-" not in errors[0] and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 1
    assert not (tmp_path / "out").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("out.failed-")]) == 1


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask in /proc): hostctl's start-up
    handler is installed, so a signal from now on is hostctl's to report."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.4, 0.9, 1.4])
def test_signal_while_starting(tmp_path, sig, delay):
    """From the moment hostctl's own code runs: typer's and rich's imports, the verbs', then validation (torch's
    import, the model's check). Before it only the interpreter's start-up remains, which no program controls."""
    inputs = make_inputs(tmp_path / "inputs", tiny_unet())
    out = tmp_path / "results"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "succeeded", "written": ["run.json", "quant_info.json"]}))
    (out / "quant_info.json").write_text('{"param": {}}')
    before = tree_snapshot(out)
    env = dict(os.environ, PYTHONPATH=source_path(os.environ.get("PYTHONPATH")), COLUMNS="200",
               HOSTCTL_CACHE_DIR=str(tmp_path / "cache"))  # a fresh cache: the model's check runs
    proc = subprocess.Popen([sys.executable, "-m", "hostctl", *tiny_args(inputs, out, "--quantizer", "portable",
                                                                         "--json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "hostctl never installed its handler"
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {name}" in errors[0], stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    summary = json.loads(stdout)
    assert summary["status"] == "interrupted" and summary["exit_code"] == 128 + sig
    assert tree_snapshot(out) == before
    # nothing beside it, but a failed-run directory if the payload had already started on a fast machine
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("inputs", "results", "cache")
            and not p.name.startswith("results.failed-")] == []
