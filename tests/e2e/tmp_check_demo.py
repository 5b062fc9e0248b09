"""hostctl demo end to end, as a user runs it: generated data -> training -> prepare -> quantize -> report."""

from __future__ import annotations

import json

import pytest
from helpers import hostctl_inprocess
import subprocess, sys, os
def run_hostctl(args, cwd=None):
    return subprocess.run([sys.executable, "-c", "import sys; import hostctl.cli.demo, hostctl.cli.prepare, hostctl.cli.evaluate; from hostctl.cli import main; main(sys.argv[1:])", *args], cwd=cwd, text=True, capture_output=True, env=dict(os.environ, PYTHONPATH="/work/main", COLUMNS="200"))

import hostctl.cli.demo  # noqa: F401 - registers the verb for the in-process test, whatever hostctl.cli imports
from container_payload.job import FLOAT_PREDS, QUANT_PREDS, SAMPLES, STATE_DICT


def run_demo(tmp_path, *extra: str) -> dict:
    result = run_hostctl(["demo", "--output-dir", str(tmp_path / "demo"), "--json", *extra], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float mIoU" in result.stderr and "quantized mIoU" in result.stderr
    return json.loads(result.stdout)


def check_layout(summary: dict, tmp_path) -> None:
    demo = tmp_path / "demo"
    assert any((demo / "dataset" / "images").iterdir()) and (demo / "dataset" / "splits" / "test.txt").is_file()
    assert (demo / "deployment_inputs" / SAMPLES).is_file() and (demo / "deployment_inputs" / STATE_DICT).is_file()
    results = demo / "quantization_results"
    for name in (FLOAT_PREDS, QUANT_PREDS, "metrics.json", "run.json", "quant_info.json"):
        assert (results / name).is_file(), name
    assert sorted(p.name for p in (results / "report").iterdir()) == ["index.html", "per_class_iou.png",
                                                                       "previews.png"]
    assert summary["metrics"] == json.loads((results / "metrics.json").read_text())


@pytest.mark.slow
def test_fast_demo(tmp_path):
    summary = run_demo(tmp_path, "--fast")
    check_layout(summary, tmp_path)
    metrics = summary["metrics"]
    # The fast variant trains for seconds: it must work, not be accurate.
    assert metrics["float"]["miou"] > 0.4
    assert abs(metrics["quantized"]["miou"] - metrics["float"]["miou"]) < 0.05
    assert summary["timings"]["total"] < 60


@pytest.mark.slow
def test_full_demo_meets_its_targets(tmp_path):
    summary = run_demo(tmp_path)
    check_layout(summary, tmp_path)
    metrics = summary["metrics"]
    assert metrics["float"]["miou"] >= 0.80
    assert abs(metrics["quantized"]["miou"] - metrics["float"]["miou"]) <= 0.02
    assert summary["timings"]["total"] < 300


def test_demo_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    code, _, err = hostctl_inprocess(["demo", "--fast", "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "is not empty and was not made by hostctl demo" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
