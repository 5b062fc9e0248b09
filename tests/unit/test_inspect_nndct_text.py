"""Reading vai_q_pytorch's inspect_<target>.txt back into inspect.json (issue 20, item 7): the layout of both of
its Inspectors, and the image's Inspector path of the payload through the fake pytorch_nndct."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from helpers import FAKE_NNDCT, source_path
from torch import nn

from container_payload.inspector import targets
from container_payload.inspector.nndct_text import parse_nodes
from container_payload.inspector.run import inspect, report_from_nodes

B4096 = targets.by_name("DPUCZDX8G_ISA1_B4096")

V3_TEXT = """# header
{sep}
graph name: Net
{sep}
node name: Net::input_0
input nodes: []
output nodes: ['Net::Net/Conv2d[c]/ret.3']
op type: nndct_input
outputs shape: [1, 8, 8, 3]
op attributes:
  shape: [1, 8, 8, 3]
assigned device: dpu
{sep}
node name: Net::Net/Conv2d[c]/ret.3
input nodes: ['Net::input_0']
output nodes: ['Net::Net/ret.5']
op type: nndct_conv2d
outputs shape: [1, 8, 8, 4]
op attributes:
  kernel: [3, 3]
assigned device: dpu
source range:
/usr/lib/python3/dist-packages/torch/nn/modules/conv.py(463): _conv_forward
/home/me/src/net.py(12): forward
{sep}
node name: Net::Net/ret.5
input nodes: ['Net::Net/Conv2d[c]/ret.3']
output nodes: []
op type: nndct_max
outputs shape: [1, 8, 8],[1, 8, 8]
op attributes:
assigned device: cpu
hardware constraints: DPU does not support nndct_max
node messages:
  zeta
  alpha
source range:
/home/me/src/net.py(13): forward
""".format(sep="=" * 160)


def test_hardware_v3_layout_is_read():
    nodes = parse_nodes(V3_TEXT)
    assert [n["name"] for n in nodes] == ["Net::input_0", "Net::Net/Conv2d[c]/ret.3", "Net::Net/ret.5"]
    assert nodes[0]["shape"] == [[1, 8, 8, 3]] and nodes[2]["shape"] == [[1, 8, 8], [1, 8, 8]]
    assert nodes[1]["source"] == "/home/me/src/net.py:12"  # torch's frame skipped
    assert nodes[2] == {"name": "Net::Net/ret.5", "op": "nndct_max", "shape": [[1, 8, 8], [1, 8, 8]],
                        "device": "cpu", "constraint": "DPU does not support nndct_max", "messages": ["alpha", "zeta"],
                        "source": "/home/me/src/net.py:13", "inputs": ["Net::Net/Conv2d[c]/ret.3"]}
    report = report_from_nodes(nodes, B4096, {"name": "test"})
    assert report["summary"] == {"dpu_subgraphs": 1, "cpu_subgraphs": 1, "cpu_ops": ["Net::Net/ret.5"]}


class Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.sigmoid(self.a(x)) + 1.5)


def test_our_own_text_reads_back_to_our_report():
    report, text = inspect(Split().eval(), (3, 16, 16), B4096)
    assert parse_nodes(text) == report["nodes"]
    again = report_from_nodes(parse_nodes(text), B4096, report["engine"])
    assert again["subgraphs"] == report["subgraphs"] and again["summary"] == report["summary"]


def test_not_an_inspect_file_is_refused():
    try:
        parse_nodes("hello\n")
    except ValueError as exc:
        assert "graph name" in str(exc)
    else:
        raise AssertionError("accepted")


def test_the_images_inspector_path_through_the_fake(tmp_path):
    """The payload's nndct engine: Inspector(name).inspect(...) writes the txt in hardware_v3's layout, which is
    read back into the same nodes and subgraphs the emulation gives (the fake answers with the emulation)."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "split.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Split(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Conv2d(3, 8, 3, padding=1)
                self.b = nn.Conv2d(8, 8, 3, padding=1)

            def forward(self, x):
                return self.b(torch.sigmoid(self.a(x)) + 1.5)
    '''))
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(model_dir)!r})
        from split import Split
        from container_payload.inspector import targets
        from container_payload.inspector.run import inspect, inspect_with_nndct
        target = targets.by_name("DPUCZDX8G_ISA1_B4096")
        ours, _ = inspect(Split().eval(), (3, 16, 16), target)
        theirs, text = inspect_with_nndct(Split().eval(), (3, 16, 16), target, {str(tmp_path)!r})
        print(json.dumps({{"ours": ours, "theirs": theirs, "v3": "outputs shape: [1, 16, 16, 3]" in text}}))
    """)
    env = dict(os.environ, PYTHONPATH=source_path(os.pathsep.join([str(FAKE_NNDCT), os.environ.get("PYTHONPATH", "")])))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fake Inspector" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["v3"]
    assert out["theirs"]["engine"] == {"name": "vai_q_pytorch Inspector", "version": "3.5.0+fake"}
    assert out["theirs"]["nodes"] == out["ours"]["nodes"]
    assert out["theirs"]["summary"] == out["ours"]["summary"] and out["ours"]["summary"]["dpu_subgraphs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # nndct's scratch directory is gone
