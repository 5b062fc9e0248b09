"""The file contract end to end: nothing of the user's is lost, no traceback, exit codes as documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_inputs, run_hostctl, tiny_args, tiny_unet, tree_snapshot

pytestmark = pytest.mark.slow


def quantize(inputs, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_hostctl(tiny_args(inputs, out, "--quantizer", "portable", *extra))


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_users_files_in_the_output_dir_survive_and_only_hostctls_files_are_replaced(tmp_path, unet_inputs):
    out = tmp_path / "out"
    first = quantize(unet_inputs, out, "--export", "torchscript")
    assert first.returncode == 0, first.stderr
    assert (out / "Unet_portable_int8.pt").exists()

    (out / "my_notes.txt").write_text("keep")  # the repro: notes beside the results
    before = tree_snapshot(out)
    refused = quantize(unet_inputs, out)
    assert refused.returncode == 2
    assert "holds files that hostctl did not write (my_notes.txt)" in one_error_line(refused)
    assert tree_snapshot(out) == before

    (out / "my_notes.txt").unlink()
    second = quantize(unet_inputs, out)  # no export this time: the old export was hostctl's, so it goes
    assert second.returncode == 0, second.stderr
    assert not (out / "Unet_portable_int8.pt").exists()
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["written"]) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"], "lock or staging left behind"


def test_output_dir_equal_to_the_input_dir_is_refused_and_the_inputs_stay(tmp_path, unet_inputs):
    (unet_inputs.dir / "run.json").write_text(json.dumps({"written": ["run.json"]}))
    before = tree_snapshot(unet_inputs.dir)
    proc = quantize(unet_inputs, unet_inputs.dir)
    assert proc.returncode == 2
    assert "output directory is the input" in one_error_line(proc)
    assert tree_snapshot(unet_inputs.dir) == before


def test_a_failed_preflight_check_leaves_no_failed_run_dir(tmp_path, unet_inputs):
    proc = quantize(unet_inputs, tmp_path / "out", "--python", "/nonexistent/python")
    assert proc.returncode == 3
    assert "no such interpreter" in one_error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_evaluate_twice_leaves_nothing_hidden_and_nan_predictions_are_an_error(tmp_path, unet_inputs):
    out = tmp_path / "out"
    assert quantize(unet_inputs, out).returncode == 0
    names = sorted(p.name for p in out.iterdir())
    for _ in range(2):
        proc = run_hostctl(["evaluate", "--input-dir", str(unet_inputs.dir), "--output-dir", str(out)])
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]

    with h5py.File(out / "quantization_test_preds.h5", "a") as h5:
        for name in h5:
            h5[name][...] = np.nan
    proc = run_hostctl(["evaluate", "--input-dir", str(unet_inputs.dir), "--output-dir", str(out), "--json"])
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "quantization_test_preds.h5: prediction 't000' holds" in line and "NaN or Inf" in line
    assert json.loads(proc.stdout)["status"] == "failed"
    assert "inf (identical)" not in proc.stderr


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(point: Path, size: str) -> Path:
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_mount_point_as_output_dir(tmp_path, unet_inputs, tmpfs):
    out = tmpfs(tmp_path / "volume", "64m")
    for _ in range(2):  # the first run fills it, the second replaces its own files in place
        proc = quantize(unet_inputs, out)
        assert proc.returncode == 0, proc.stderr
    assert {"quant_info.json", "run.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_disk_full_inside_the_payload_is_one_line_and_leaves_earlier_results(tmp_path, tmpfs):
    from test_quantize_local import _start_slow_run, _wait_for_calibration

    disk = tmpfs(tmp_path / "disk", "24m")
    out = disk / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "succeeded", "written": ["run.json", "quant_info.json"]}))
    (out / "quant_info.json").write_text('{"param": {"earlier": [[8, 3]]}}')
    before = tree_snapshot(out)
    proc = _start_slow_run(tmp_path, out, delay=0.05)
    _wait_for_calibration(disk)
    with open(disk / "filler", "wb") as filler:  # another program fills the disk while the run calibrates
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError:
            pass
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        (disk / "filler").unlink()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "no space left on device" in stderr and "earlier results are intact" in stderr
    assert tree_snapshot(out) == before
    failed = [p for p in disk.iterdir() if p.name.startswith("out.failed-")]
    assert len(failed) == 1
    assert {p.name for p in failed[0].iterdir()} <= {"result.json", "run.json", "run.log"}
    assert not list(failed[0].glob("*.tmp")) and not [p for p in disk.iterdir() if ".hostctl-" in p.name]


def test_disk_too_small_for_the_run_is_refused_before_it_starts(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "small", "1m")
    inputs = make_inputs(tmp_path / "inputs", tiny_unet(), n_test=64)
    proc = quantize(inputs, disk / "out")
    assert proc.returncode == 2
    assert "free, the run needs about" in one_error_line(proc)
    assert list(disk.iterdir()) == []


def test_a_payload_killed_by_a_signal_names_the_signal(tmp_path):
    import sys

    from helpers import USER_MODELS

    sys.path.insert(0, str(USER_MODELS))
    try:
        from misbehaving import KilledBy
    finally:
        sys.path.remove(str(USER_MODELS))
    inputs = make_inputs(tmp_path / "in", KilledBy())
    proc = quantize(inputs, tmp_path / "out", "--model", "misbehaving:KilledBy", "--model-path", str(USER_MODELS))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "the payload was killed by SIGKILL" in line and "out-of-memory" in line
    assert "status -9" not in proc.stderr


def test_disk_full_while_writing_the_report_is_one_line(tmp_path, unet_inputs, capsys, monkeypatch):
    """The host's own writes: the report is drawn after the payload, so a full disk can strike there."""
    import errno

    from helpers import hostctl_inprocess

    import hostctl.report

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "report" / "previews.png"))

    monkeypatch.setattr(hostctl.report, "write_report", full)
    out = tmp_path / "out"
    code, stdout, err = hostctl_inprocess(tiny_args(unet_inputs, out, "--quantizer", "portable", "--json"), capsys)
    assert code == 1
    assert "error: no space left on device writing" in err and "earlier results are intact" in err
    assert "Traceback" not in err and json.loads(stdout)["status"] == "failed"
    assert not out.exists()
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("out.failed-")]
    assert len(failed) == 1 and {p.name for p in failed[0].iterdir()} <= {"run.json", "run.log", "result.json"}
    assert json.loads((failed[0] / "run.json").read_text())["status"] == "failed"


def test_a_disk_too_small_for_prepare_is_refused_before_it_writes(tmp_path, tmpfs):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (64, 64), dtype=np.uint8), mode="L").save(data / "masks" / f"{i}.png")
    disk = tmpfs(tmp_path / "disk", "512k")
    proc = run_hostctl(["prepare", "--dataset", str(data), "--output-dir", str(disk / "inputs"), "--input-size",
                        "3", "64", "64", "--num-classes", "3", "--calib-samples", "30"])
    assert proc.returncode == 2, proc.stderr
    assert "free, the run needs about" in one_error_line(proc)
    assert list(disk.iterdir()) == []
