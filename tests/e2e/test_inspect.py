"""hostctl inspect end to end, in a subprocess like a user runs it (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import hostctl_inprocess, run_hostctl, tree_snapshot

pytestmark = pytest.mark.slow

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, slope=0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.LeakyReLU(slope)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * 16 * 16, 10)

    def forward(self, x):
        y = self.act(self.conv1(x))
        y = y * torch.sigmoid(self.conv2(y))
        return self.head(y.flatten(1))
'''


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(NET)
    return tmp_path / "models"


def _inspect(model_dir: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    proc = run_hostctl(["inspect", "--model", "net:Net", "--model-path", str(model_dir), "--input-size", "3", "16",
                        "16", "--output-dir", str(out), "--json", *extra], env={"COLUMNS": "80"})
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def test_cpu_islands_are_named_with_the_reason_and_counted(tmp_path, model_dir):
    out = tmp_path / "inspection"
    code, summary, err = _inspect(model_dir, out, "--board", "kv260")
    assert code == 0, err
    assert summary["target"]["name"] == "DPUCZDX8G_ISA1_B4096"
    reasons = {n["op"]: n["constraint"] for n in summary["cpu_nodes"]}
    assert reasons == {"nndct_leaky_relu": "Its alpa is 0.1, but DPU only support 0.1015625.",
                       "nndct_sigmoid": "DPU does not support nndct_sigmoid"}
    assert summary["summary"]["dpu_subgraphs"] == 3
    assert "2 op(s) of the model on the CPU; it compiles into 3 DPU subgraph(s)" in err
    assert "warning: 3 DPU subgraphs" in err
    # each CPU op with the user's own line that made it (net.py's forward, not torch's modules), whole at 80 columns
    lines = NET.splitlines()
    act, gate = (i + 1 for i, line in enumerate(lines) if "self.act(" in line or "sigmoid(" in line)
    sources = {n["op"]: n["source"] for n in summary["cpu_nodes"]}
    assert sources == {"nndct_leaky_relu": f"{model_dir / 'net.py'}:{act}",
                       "nndct_sigmoid": f"{model_dir / 'net.py'}:{gate}"}
    assert f"net.py:{act}  leaky_relu  in Net/LeakyReLU[act]" in err
    assert f"net.py:{gate}  sigmoid  in Net" in err
    report = json.loads((out / "inspect.json").read_text())
    assert report["schema"] == 1 and report["summary"] == summary["summary"]
    assert [n["device"] for n in report["nodes"]].count("cpu") == 2
    text = (out / "inspect_DPUCZDX8G_ISA1_B4096.txt").read_text()
    assert "The operators assigned to the CPU are as follows:" in text
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    # the picture of the graph (its content: tests/unit/test_inspect_picture.py)
    assert (out / "inspect_graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sigmoid" in (out / "inspect_graph.svg").read_text()


def test_the_dpus_slope_keeps_everything_but_the_sigmoid_on_the_dpu(tmp_path, model_dir):
    code, summary, err = _inspect(model_dir, tmp_path / "out", "--target", "DPUCZDX8G_ISA1_B512",
                                  "--model-arg", "slope=0.1015625")
    assert code == 0, err
    assert [n["op"] for n in summary["cpu_nodes"]] == ["nndct_sigmoid"]
    # nndct's Inspector counts connected DPU nodes: the mul reads the leaky relu too, so the DPU side stays one
    assert summary["summary"]["dpu_subgraphs"] == 1


def test_a_wrong_target_is_refused_before_anything_is_written(tmp_path, model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json", "inspect.json"]}')
    (out / "inspect.json").write_text("{}")
    before = tree_snapshot(out)
    code, summary, err = _inspect(model_dir, out, "--target", "DPUCZDX8G_ISA1_B4069")
    assert code == 2
    assert summary["status"] == "failed" and "DPUCZDX8G_ISA1_B4096" in summary["error"]
    assert "--list-targets" in summary["hint"]
    assert tree_snapshot(out) == before
    listed = run_hostctl(["inspect", "--list-targets"])  # the hint's command works
    assert listed.returncode == 0 and "DPUCZDX8G_ISA1_B4096" in listed.stdout.split()


def _left_in(tmp: Path) -> list[str]:
    """Payload shims left in `tmp`, and processes whose working directory is under it."""
    left = [p.name for p in tmp.glob("hostctl-payload-*")]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(tmp) in str((proc / "cwd").resolve()):
                left.append(f"process {proc.name}")
        except OSError:
            continue
    return left


def test_the_payload_started_with_the_cli_gives_the_answer_of_one_started_after_it(tmp_path, model_dir, capsys):
    """`python -m hostctl inspect` starts its payload before typer's import (hostctl/warm.py); in this process
    the CLI starts the payload only when it runs it. Same files, and nothing left behind either way."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["inspect", "--model", "net:Net", "--model-path", str(model_dir), "--input-size", "3", "16", "16",
            "--board", "kv260", "--debug"]
    early = run_hostctl([*args, "--output-dir", str(tmp_path / "early")], env={"TMPDIR": str(tmp)})
    assert early.returncode == 0, early.stderr
    assert "--job -" not in early.stderr and "(started early)" in early.stderr
    assert _left_in(tmp) == []
    code, _, err = hostctl_inprocess([*args, "--output-dir", str(tmp_path / "late")], capsys)
    assert code == 0, err
    assert "(started early)" not in err
    for name in ("inspect.json", "inspect_DPUCZDX8G_ISA1_B4096.txt", "inspect_graph.svg"):
        assert (tmp_path / "early" / name).read_bytes() == (tmp_path / "late" / name).read_bytes(), name


def test_a_refused_inspection_ends_the_payload_it_started(tmp_path, model_dir):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = run_hostctl(["inspect", "--target", "DPUCZDX8G_ISA1_B4069"], env={"TMPDIR": str(tmp)})
    assert proc.returncode == 2, proc.stderr
    assert _left_in(tmp) == []
