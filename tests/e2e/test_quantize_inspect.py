"""quantize --target/--board inspects the model first, in seconds, before any calibration (issue 20, item 6):
the verdict on the terminal, inspect.json and inspect_<target>.txt among the results, the summary in run.json;
--dpu-strict stops at more than one DPU subgraph with exit 2, before anything runs or is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_inputs, run_hostctl, tiny_args, tree_snapshot

pytestmark = pytest.mark.slow

SPLIT = '''
import torch
import torch.nn.functional as F
from torch import nn


class SplitSeg(nn.Module):
    """A conv, a GELU the DPU lacks, a conv: two DPU subgraphs."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.stem(x)))
'''


@pytest.fixture
def split_model(tmp_path: Path) -> tuple[Path, object]:
    import importlib.util

    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "splitseg.py"
    path.write_text(SPLIT)
    spec = importlib.util.spec_from_file_location("splitseg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp_path / "models", module.SplitSeg()


def test_board_inspects_first_and_records_the_verdict(tmp_path, unet_inputs):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "portable", "--board", "kv260", "--json"))
    assert proc.returncode == 0, proc.stderr
    # the report names the DPU and the verdict too
    assert "DPUCZDX8G_ISA1_B4096: every op on the DPU, 1 DPU subgraph(s)" in (out / "report" / "index.html").read_text()
    verdict = "All ops run on DPUCZDX8G_ISA1_B4096's DPU, in one DPU subgraph."
    assert verdict in proc.stderr
    assert proc.stderr.index(verdict) < proc.stderr.index("Calibrating")  # before any calibration
    run = json.loads((out / "run.json").read_text())
    assert run["inspect"]["target"]["name"] == "DPUCZDX8G_ISA1_B4096"
    assert run["inspect"]["summary"] == {"dpu_subgraphs": 1, "cpu_subgraphs": 0, "cpu_ops": []}
    assert json.loads(proc.stdout)["inspect"]["summary"]["dpu_subgraphs"] == 1
    report = json.loads((out / "inspect.json").read_text())
    assert report["schema"] == 1 and all(n["device"] == "dpu" for n in report["nodes"])
    assert "All the operators are assigned to the DPU." in (out / "inspect_DPUCZDX8G_ISA1_B4096.txt").read_text()
    assert {"inspect.json", "inspect_DPUCZDX8G_ISA1_B4096.txt", "inspect_graph.svg",
            "inspect_graph.png"} <= set(run["written"])


def test_dpu_strict_stops_before_calibration_and_keeps_earlier_results(tmp_path, split_model):
    model_dir, model = split_model
    inputs = make_inputs(tmp_path / "in", model)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json"]}')
    before, beside = tree_snapshot(out), sorted(p.name for p in tmp_path.iterdir())
    args = tiny_args(inputs, out, "--model", "splitseg:SplitSeg", "--model-path", str(model_dir),
                     "--quantizer", "portable", "--board", "kv260", "--dpu-strict", "--json")
    proc = run_hostctl(args, env={"COLUMNS": "80"})
    assert proc.returncode == 2, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    assert summary["error"].startswith("--dpu-strict: the model compiles into 2 DPU subgraphs on "
                                       "DPUCZDX8G_ISA1_B4096")
    assert "Calibrating" not in proc.stderr and "Float predictions" not in proc.stderr
    assert "splitseg.py:16  GELU  in SplitSeg" in proc.stderr  # the op to move, with the user's line
    assert tree_snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == beside
    # the hint's command exists and writes what it says
    assert "hostctl inspect --target DPUCZDX8G_ISA1_B4096" in summary["hint"]
    inspected = run_hostctl(["inspect", "--target", "DPUCZDX8G_ISA1_B4096", "--model", "splitseg:SplitSeg",
                             "--model-path", str(model_dir), "--input-size", "3", "32", "32",
                             "--output-dir", str(tmp_path / "inspection")])
    assert inspected.returncode == 0, inspected.stderr
    assert (tmp_path / "inspection" / "inspect.json").is_file()
    # without --dpu-strict the same run goes on, and says why it might not deploy as hoped
    proc = run_hostctl(args[:-2] + ["--output-dir", str(tmp_path / "out2"), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert "warning: 2 DPU subgraphs" in proc.stderr
    assert [n["op"] for n in json.loads(proc.stdout)["inspect"]["cpu_nodes"]] == ["nndct_GELU"]


@pytest.mark.parametrize("extra,message", [
    (["--board", "kv260", "--target", "DPUCVDX8G_ISA3_C32B6"], "name different DPUs"),
    (["--target", "DPUCZDX8G_ISA1_B9999"], "--target DPUCZDX8G_ISA1_B9999"),
    (["--dpu-strict"], "--dpu-strict needs the DPU"),
])
def test_target_mistakes_are_one_line_before_work(tmp_path, unet_inputs, extra, message):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "portable", *extra, "--json"))
    assert proc.returncode == 2, proc.stderr
    assert message in json.loads(proc.stdout)["error"]
    assert not out.exists()
    assert len(proc.stderr.strip().splitlines()) <= 2  # error and hint
