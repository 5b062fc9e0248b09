"""The picture of an inspected graph (issue 20): boxes by device, big graphs collapsed, SVG and PNG, on reports the
payload's own code writes and on hand-built ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from container_payload.inspector import targets
from container_payload.inspector.filters import DevNode
from container_payload.inspector.run import execute, to_report
from container_payload.job import INSPECT_REPORT, InspectJob
from hostctl.inspect_picture import BIG_GRAPH, COLOURS, LEGEND, MANY_CPU_OPS, MAX_PIXELS, write_pictures

SVG = "{http://www.w3.org/2000/svg}"
FILES = ["inspect_graph.svg", "inspect_graph.png"]
B4096 = "DPUCZDX8G_ISA1_B4096"

NET = '''
import torch
from torch import nn
import torch.nn.functional as F


class PictureNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 8 * 8 * 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = F.relu(self.stem(x))
        y = F.interpolate(y, scale_factor=2, mode="bicubic")
        y = F.leaky_relu(self.mid(y), 0.2)
        y = self.fc(F.max_pool2d(y, 2).flatten(1)).view(1, 8, 8, 8)
        return self.head(y)
'''


class Picture:
    """What the written files show: the SVG's box titles (bold, centred), every text, boxes per colour."""

    def __init__(self, directory: Path, written: list[str]):
        assert written == FILES
        assert sorted(os.listdir(directory)) == sorted(FILES), "no partial file is left behind"
        png = (directory / FILES[1]).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        self.png_size = Image.open(directory / FILES[1]).size
        assert 100 < max(self.png_size) <= MAX_PIXELS
        self.svg = (directory / FILES[0]).read_bytes()
        root = ET.fromstring(self.svg)
        texts = [(t.get("style", ""), t.text or "") for t in root.iter(f"{SVG}text")]
        self.texts = [text for _, text in texts]
        self.titles = [text for style, text in texts if "font-weight: 700" in style and "middle" in style]
        fills = [re.search(r"fill: (#[0-9a-f]{6}); stroke:", p.get("style", "")) for p in root.iter(f"{SVG}path")]
        by_colour = Counter(m.group(1) for m in fills if m)
        # a box is a filled, outlined path of its kind's colour; the legend holds one swatch of each
        self.boxes = {kind: by_colour[fill] - 1 for kind, (fill, _) in COLOURS.items()}


def _draw(report: dict, directory: Path) -> Picture:
    directory.mkdir(parents=True, exist_ok=True)
    return Picture(directory, write_pictures(report, directory))


def _graph(ops: list[tuple[str, str, list[int]]]) -> dict:
    """inspect.json by the payload's to_report, for (op, device, parent indices) after the input; the CPU ops get
    nndct's reason for unsupported ops."""
    shape = [[1, 8, 8, 4]]
    nodes = [DevNode("Syn::input_0", "nndct_input", {}, [], shape, device="dpu")]
    for i, (op, device, parents) in enumerate(ops, 1):
        node = DevNode(f"Syn::Syn/Sequential[body]/Block[{i // 4}]/Conv2d[{i % 4}]/ret.{i}", op, {}, shape, shape,
                       device=device, constraint=f"DPU does not support {op}" if device == "cpu" else None)
        for p in parents:
            node.parents.append(nodes[p])
            nodes[p].children.append(node)
        nodes.append(node)
    return to_report(nodes, targets.by_name(B4096))


def _chain(n: int, cpu_at: set[int], cpu_op: str = "nndct_sigmoid") -> dict:
    kinds = ("nndct_conv2d", "nndct_relu", "nndct_conv2d", "nndct_elemwise_add")
    return _graph([(cpu_op, "cpu", [i - 1]) if i in cpu_at else (kinds[i % 4], "dpu", [i - 1] + [i - 3] * (i % 4 == 3))
                   for i in range(1, n)])


def test_every_op_of_a_small_graph_is_a_box_and_the_cpu_op_stands_out(tmp_path: Path):
    report = {  # as the payload writes it, by hand: a gate whose sigmoid nndct leaves to the CPU
        "schema": 1,
        "target": {"name": B4096, "type": "DPUCZDX8G", "isa_version": 1, "fingerprint": "0x101000056010407"},
        "nodes": [
            {"name": "Net::input_0", "op": "nndct_input", "shape": [[1, 8, 8, 3]], "device": "dpu",
             "constraint": None, "messages": [], "source": None, "inputs": []},
            {"name": "Net::Net/Sequential[features]/Conv2d[0]/ret.3", "op": "nndct_conv2d", "shape": [[1, 8, 8, 4]],
             "device": "dpu", "constraint": None, "messages": [], "source": None, "inputs": ["Net::input_0"]},
            {"name": "Net::Net/Gate[gate]/ret.5", "op": "nndct_sigmoid", "shape": [[1, 8, 8, 4]], "device": "cpu",
             "constraint": "DPU does not support nndct_sigmoid", "messages": [], "source": "net.py:12",
             "inputs": ["Net::Net/Sequential[features]/Conv2d[0]/ret.3"]},
            {"name": "Net::Net/ret.7", "op": "nndct_elemwise_mul", "shape": [[1, 8, 8, 4]], "device": "dpu",
             "constraint": None, "messages": [], "source": None,
             "inputs": ["Net::Net/Sequential[features]/Conv2d[0]/ret.3", "Net::Net/Gate[gate]/ret.5"]},
            {"name": "Net::Net/Conv2d[head]/ret", "op": "nndct_conv2d", "shape": [[1, 8, 8, 2]], "device": "dpu",
             "constraint": None, "messages": [], "source": None, "inputs": ["Net::Net/ret.7"]},
        ],
        "subgraphs": [{"device": "dpu", "nodes": ["Net::input_0", "Net::Net/Sequential[features]/Conv2d[0]/ret.3",
                                                  "Net::Net/ret.7", "Net::Net/Conv2d[head]/ret"]},
                      {"device": "cpu", "nodes": ["Net::Net/Gate[gate]/ret.5"]}],
        "summary": {"dpu_subgraphs": 1, "cpu_subgraphs": 1, "cpu_ops": ["Net::Net/Gate[gate]/ret.5"]},
    }
    picture = _draw(report, tmp_path / "a")
    assert picture.titles == ["input", "conv2d", "sigmoid", "elemwise_mul", "conv2d", "output"]
    assert picture.boxes == {"dpu": 3, "cpu": 1, "input": 1, "output": 1}
    # each box: the op kind, the module as named_modules() names it; the CPU op also nndct's reason, shortened
    for line in ("features.0", "gate", "head", "DPU does not support sigmoid", "1x8x8x3", "1x8x8x2"):
        assert line in picture.texts
    assert f"Net on {B4096}: 1 op on the CPU, 1 DPU subgraph" in picture.texts
    assert picture.texts[-len(LEGEND):] == [label for _, label in LEGEND]
    assert _draw(report, tmp_path / "b").svg == picture.svg, "the SVG is the same bytes on every run"


def test_the_picture_of_a_real_inspection_shows_each_op_the_payload_left_to_the_cpu(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "picture_net.py").write_text(NET)
    (tmp_path / "run").mkdir()
    execute(InspectJob(run_dir=str(tmp_path / "run"), target=B4096, input_size=(3, 8, 8),
                       model="picture_net:PictureNet", model_path=str(tmp_path / "models")))
    report = json.loads((tmp_path / "run" / INSPECT_REPORT).read_text())
    cpu = [n for n in report["nodes"] if n["device"] == "cpu"]
    assert {n["op"] for n in cpu} >= {"aten::upsample_bicubic2d", "nndct_leaky_relu"}
    assert len(report["nodes"]) <= BIG_GRAPH

    picture = _draw(report, tmp_path / "picture")
    assert picture.boxes["cpu"] == len(cpu) and picture.boxes["dpu"] == len(report["nodes"]) - len(cpu) - 1
    assert Counter(t for t in picture.titles if t not in ("input", "output")) == Counter(
        n["op"].replace("nndct_", "").replace("aten::", "") for n in report["nodes"] if n["op"] != "nndct_input")
    assert "Its alpa is 0.2, but DPU only" in picture.texts  # nndct's reason, wrapped
    assert "layout permute nndct adds" in picture.texts
    inserted = sum("_transpose_" in n["name"] for n in cpu)
    dpu = report["summary"]["dpu_subgraphs"]
    assert (f"PictureNet on {B4096}: {len(cpu) - inserted} ops on the CPU (and {inserted} layout permutes nndct "
            f"inserts), {dpu} DPU subgraphs") in picture.texts


def test_a_big_graph_draws_each_dpu_subgraph_as_one_box_and_keeps_the_cpu_ops(tmp_path: Path):
    report = _chain(300, cpu_at={100, 200})
    assert report["summary"]["dpu_subgraphs"] == 3
    picture = _draw(report, tmp_path)
    sizes = [len(s["nodes"]) - (k == 0) for k, s in enumerate(report["subgraphs"]) if s["device"] == "dpu"]
    assert picture.titles == ["input", f"DPU subgraph 1: {sizes[0]} ops", "sigmoid", f"DPU subgraph 2: {sizes[1]} ops",
                              "sigmoid", f"DPU subgraph 3: {sizes[2]} ops", "output"]
    assert picture.boxes == {"dpu": 3, "cpu": 2, "input": 1, "output": 1}
    assert "conv2d x49, elemwise_add x25, relu x25" in picture.texts  # subgraph 1's op kinds, most first
    assert "body.25.0" in picture.texts and "DPU does not support sigmoid" in picture.texts
    assert "300 nodes, each DPU subgraph drawn as one box; DPUCZDX8G ISA 1, fingerprint " \
           f"{report['target']['fingerprint']}" in picture.texts


def test_data_that_leaves_a_subgraph_for_the_cpu_and_comes_back_is_drawn_going_up(tmp_path: Path):
    # squeeze-and-excitation blocks: a sigmoid on the CPU whose product joins the same DPU subgraph again
    ops: list[tuple[str, str, list[int]]] = []
    for _ in range(12):
        x = len(ops)  # the block's input
        ops += [("nndct_conv2d", "dpu", [x]), ("nndct_avgpool", "dpu", [x + 1]), ("nndct_conv2d", "dpu", [x + 2]),
                ("nndct_sigmoid", "cpu", [x + 3]), ("nndct_elemwise_mul", "dpu", [x + 1, x + 4]),
                ("nndct_elemwise_add", "dpu", [x, x + 5])]
    report = _graph(ops)
    assert len(report["nodes"]) > BIG_GRAPH and report["summary"]["dpu_subgraphs"] == 1
    picture = _draw(report, tmp_path)
    assert picture.titles.count("sigmoid") == 12 and picture.boxes["dpu"] == 1
    assert "data back up into a subgraph" in picture.texts
    dashed = [p for p in ET.fromstring(picture.svg).iter(f"{SVG}path") if "stroke-dasharray" in p.get("style", "")]
    assert len(dashed) == 12 + 1  # one per sigmoid, and the legend's


def test_very_many_cpu_ops_are_drawn_by_connected_runs_with_their_kinds(tmp_path: Path):
    cpu_at = {i for k in range(10, 390, 8) for i in (k, k + 1)} | {395}
    report = _chain(400, cpu_at)
    assert len(cpu_at) > MANY_CPU_OPS
    picture = _draw(report, tmp_path)
    runs = [t for t in picture.titles if t.startswith("CPU subgraph")]
    assert len(runs) == 48 and all(t.endswith(": 2 ops") for t in runs)
    assert "sigmoid x2" in picture.texts
    assert picture.titles.count("sigmoid") == 1, "a CPU op alone stays itself"
    assert picture.boxes["cpu"] == 49 and picture.boxes["dpu"] == report["summary"]["dpu_subgraphs"]


def test_a_2000_node_graph_is_drawn_in_seconds_and_within_the_size_cap(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]):
    report = _chain(2000, cpu_at=set(range(13, 2000, 13)))
    t0 = time.perf_counter()
    picture = _draw(report, tmp_path)
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n  picture of a 2,000-node graph ({sum(picture.boxes.values())} boxes): {elapsed:.2f} s, "
              f"PNG {picture.png_size[0]}x{picture.png_size[1]}, SVG {len(picture.svg) // 1024} KiB")
    assert sum(picture.boxes.values()) < len(report["nodes"]) / 5


def test_matplotlib_is_imported_only_when_a_picture_is_drawn():
    code = "import sys, hostctl.inspect_picture; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0
