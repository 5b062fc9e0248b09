"""hostctl demo end to end, as a user runs it: generated data -> training -> prepare -> quantize -> report."""

from __future__ import annotations

import json
import shlex

import pytest
from helpers import hostctl_inprocess, run_hostctl

from container_payload.job import FLOAT_PREDS, LAYERS, QUANT_PREDS, SAMPLES, STATE_DICT
from hostctl.demo import FAST, FULL


def run_demo(tmp_path, *extra: str) -> dict:
    result = run_hostctl(["demo", "--output-dir", str(tmp_path / "demo"), "--json", *extra], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float mIoU" in result.stderr and "quantized mIoU" in result.stderr
    run_demo.last_stderr = result.stderr  # type: ignore[attr-defined]
    return json.loads(result.stdout)


def check_layout(summary: dict, tmp_path) -> None:
    demo = tmp_path / "demo"
    assert any((demo / "dataset" / "images").iterdir()) and (demo / "dataset" / "splits" / "test.txt").is_file()
    assert (demo / "deployment_inputs" / SAMPLES).is_file() and (demo / "deployment_inputs" / STATE_DICT).is_file()
    results = demo / "quantization_results"
    for name in (FLOAT_PREDS, QUANT_PREDS, "metrics.json", "run.json", "quant_info.json"):
        assert (results / name).is_file(), name
    pictures = ["index.html", "per_class_iou.png", "previews.png"]
    if json.loads((results / "run.json").read_text())["payload"]["backend"] in ("portable", "hybrid"):
        assert (results / LAYERS).is_file()  # the layer analysis, and its plot in the report
        pictures.insert(1, "layers_sqnr.png")
    assert sorted(p.name for p in (results / "report").iterdir()) == pictures
    assert summary["metrics"] == json.loads((results / "metrics.json").read_text())


@pytest.mark.slow
def test_fast_demo(tmp_path):
    summary = run_demo(tmp_path, "--fast")
    check_layout(summary, tmp_path)
    metrics = summary["metrics"]
    # The fast variant trains for seconds: it must work, not be accurate (all background would score about 0.12).
    assert summary["steps"] == FAST.steps  # a fixed amount of work, whatever the machine's load
    assert metrics["float"]["miou"] > 0.5
    assert abs(metrics["quantized"]["miou"] - metrics["float"]["miou"]) < 0.05
    # The demo's inputs can be quantized again with the command it prints and records.
    command = shlex.split(summary["quantize_command"])
    assert summary["model"]["model_args"] == {"width": FAST.width, "depth": FAST.depth}
    assert " ".join(command) in " ".join(run_demo.last_stderr.split())
    again = run_hostctl([*command[1:-2], "--output-dir", str(tmp_path / "again"), "--no-evaluate"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_full_demo_meets_its_targets(tmp_path):
    summary = run_demo(tmp_path)
    check_layout(summary, tmp_path)
    metrics = summary["metrics"]
    # The README's figures, on any machine however loaded: training is a fixed number of steps.
    assert summary["steps"] == FULL.steps
    assert metrics["float"]["miou"] >= 0.90
    assert abs(metrics["quantized"]["miou"] - metrics["float"]["miou"]) <= 0.01
    print(f"demo: {summary['timings']['total']:.0f}s, float mIoU {metrics['float']['miou']:.4f}, quantized "
          f"{metrics['quantized']['miou']:.4f}, agreement {metrics['agreement']:.4f}")


def test_demo_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    code, _, err = hostctl_inprocess(["demo", "--fast", "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "is not empty and was not made by hostctl demo" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
