"""hostctl inspect --runtime docker (issue 20, item 7): vai_q_pytorch's own Inspector in the image, its
inspect_<target>.txt read back into the same files the emulation writes. The stand-in image has no pytorch_nndct;
the fake one (tests/fake_nndct, installed through --requirements) answers with the emulation and says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from docker_helpers import fake_nndct_requirements, hostctl_containers
from helpers import run_hostctl, tree_snapshot

pytestmark = pytest.mark.docker

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.b(torch.sigmoid(self.a(x)))
'''


def _comparable(node: dict) -> tuple:
    scope = lambda name: name.rsplit("/", 1)[0]  # noqa: E731 - `Net::Net/Conv2d[a]/ret.3` -> `Net::Net/Conv2d[a]`
    return (scope(node["name"]), node["op"], node["shape"], node["device"], node["constraint"], node["messages"],
            [scope(name) for name in node["inputs"]])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(NET)
    return tmp_path / "models"


def _args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["inspect", "--board", "kv260", "--model", "net:Net", "--model-path", str(model_dir), "--input-size", "3",
            "16", "16", "--output-dir", str(out), "--json", *extra]


def test_the_images_inspector_answers_in_the_same_files(tmp_path, stand_in_image, docker_client, model_dir):
    requirements = fake_nndct_requirements(tmp_path)
    out = tmp_path / "in-image"
    proc = run_hostctl(_args(model_dir, out, "--runtime", "docker", "--image", stand_in_image, "--pull", "never",
                             "--requirements", str(requirements)),
                       env={"HOSTCTL_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert "vai_q_pytorch's Inspector in" in proc.stderr and "fake Inspector" in (out / "run.log").read_text()
    report = json.loads((out / "inspect.json").read_text())
    assert report["engine"] == {"name": "vai_q_pytorch Inspector", "version": "3.5.0+fake"}
    local = tmp_path / "local"
    mine = run_hostctl(_args(model_dir, local))
    assert mine.returncode == 0, mine.stderr
    emulated = json.loads((local / "inspect.json").read_text())
    # the same nodes and subgraphs (names up to the tracer's value numbers: the image's torch is Debian's 1.13)
    assert [_comparable(n) for n in report["nodes"]] == [_comparable(n) for n in emulated["nodes"]]
    assert report["summary"]["dpu_subgraphs"] == emulated["summary"]["dpu_subgraphs"] == 2
    # the user's line as this machine names it, not as the container saw it
    assert [n["source"] for n in report["nodes"] if n["op"] == "nndct_sigmoid"] == [f"{model_dir / 'net.py'}:13"]
    assert json.loads(proc.stdout)["summary"] == report["summary"]
    assert "sigmoid  in Net" in proc.stderr
    assert (out / "inspect_DPUCZDX8G_ISA1_B4096.txt").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith("nndct-inspect-")]
    assert all(p.stat().st_uid == os.getuid() for p in out.rglob("*"))
    assert hostctl_containers(docker_client) == []


def test_an_image_without_pytorch_nndct_is_exit_3_with_the_way_out(tmp_path, stand_in_image, model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json"]}')
    before = tree_snapshot(out)
    proc = run_hostctl(_args(model_dir, out, "--runtime", "docker", "--image", stand_in_image, "--pull", "never"))
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert "pytorch_nndct does not import" in summary["error"]
    assert "without --runtime docker" in summary["error"]
    assert tree_snapshot(out) == before
