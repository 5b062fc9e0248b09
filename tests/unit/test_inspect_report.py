"""hostctl inspect's target resolution and the files its payload writes (issue 20), on hand-built graphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from container_payload.inspector import targets
from container_payload.inspector.filters import DevNode
from container_payload.inspector.partition import allocate
from container_payload.inspector.run import nndct_text, to_report
from container_payload.job import InspectJob, SchemaError, job_task
from hostctl.errors import UsageError
from hostctl.inspect import InspectOptions, resolve_target


def test_the_target_is_resolved_from_each_kind_of_option(tmp_path: Path):
    assert resolve_target(InspectOptions(board="kv260")).name == "DPUCZDX8G_ISA1_B4096"
    assert resolve_target(InspectOptions(target="DPUCZDX8G_ISA1_B512")).name == "DPUCZDX8G_ISA1_B512"
    b4096 = targets.by_name("DPUCZDX8G_ISA1_B4096")
    assert resolve_target(InspectOptions(fingerprint=b4096.fingerprint_hex)).name == b4096.name
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"fingerprint": b4096.fingerprint_hex}))
    assert resolve_target(InspectOptions(arch=arch)).name == b4096.name


@pytest.mark.parametrize("opts,message", [
    (InspectOptions(), "no DPU target given"),
    (InspectOptions(board="kv260", target="DPUCZDX8G_ISA1_B512"), "--target and --board both name the DPU"),
    (InspectOptions(target="DPUCZDX8G_ISA1_B4069"), "DPUCZDX8G_ISA1_B4096"),  # a close match is named
    (InspectOptions(board="kv261"), "is not one of: kv260"),
])
def test_a_wrong_target_is_one_line_before_any_work(opts, message):
    with pytest.raises(UsageError) as error:
        resolve_target(opts)
    assert message in error.value.message and "\n" not in error.value.message
    assert error.value.exit_code == 2


def test_the_inspect_job_round_trips_and_is_told_apart():
    job = InspectJob(run_dir="/run", target="DPUCZDX8G_ISA1_B4096", input_size=(3, 64, 64))
    assert job_task(job.to_json()) == "inspect"
    assert InspectJob.from_json(job.to_json()) == job
    with pytest.raises(SchemaError, match="input_size"):
        InspectJob.from_json(job.to_json().replace("64", "0", 1))


def _graph() -> list[DevNode]:
    shape = [[1, 8, 8, 4]]
    nodes = [DevNode("Net::input_0", "nndct_input", {}, [], shape),
             DevNode("Net::Net/Conv2d[conv]/ret.3", "nndct_conv2d",
                     {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1], "pad": [1, 1, 1, 1]}, shape, shape,
                     weight_shape=[4, 3, 3, 4]),
             DevNode("Net::Net/Sigmoid[gate]/11", "nndct_sigmoid", {"source": "net.py(12): forward"}, shape, shape),
             DevNode("Net::Net/ReLU[relu]/12", "nndct_relu", {}, shape, shape),
             DevNode("Net::return_0", "nndct_return", {}, shape, [])]
    for a, b in zip(nodes, nodes[1:], strict=False):
        a.children.append(b)
        b.parents.append(a)
    return nodes


def test_inspect_json_and_nndcts_text_from_one_allocation():
    nodes = _graph()
    target = targets.by_name("DPUCZDX8G_ISA1_B4096")
    allocate(nodes, target)
    report = to_report(nodes, target)
    assert report["schema"] == 1 and report["target"]["name"] == "DPUCZDX8G_ISA1_B4096"
    assert [n["device"] for n in report["nodes"]] == ["dpu", "dpu", "cpu", "dpu"]
    assert report["nodes"][2]["constraint"] == "DPU does not support nndct_sigmoid"
    assert report["nodes"][2]["source"] == "net.py(12): forward"
    assert report["summary"] == {"dpu_subgraphs": 2, "cpu_subgraphs": 1, "cpu_ops": ["Net::Net/Sigmoid[gate]/11"]}
    assert [s["device"] for s in report["subgraphs"]] == ["dpu", "dpu", "cpu"]
    text = nndct_text(nodes, target, "Net")
    assert "The operators assigned to the CPU are as follows:" in text
    assert "Net::Net/Sigmoid[gate]/11  nndct_sigmoid  DPU does not support nndct_sigmoid" in text
    assert "node name: Net::Net/ReLU[relu]/12\ninput nodes: ['Net::Net/Sigmoid[gate]/11']" in text
    assert "nndct_return" not in text


def test_subgraphs_are_counted_as_nndcts_inspector_counts_them():
    """nndct's _get_subgraphs_and_output_boundaries: each source's reach joins the set numbered by the smallest
    first-assigned number among its nodes, which is not transitive. s0 -> a <- s1 -> b <- s2: s1's reach joins
    s0's set (through a), s2's joins s1's number (through b), which no set keeps: two DPU subgraphs where the graph
    is one connected part (seen on timm's nf_resnet26: 54 against 50)."""
    from container_payload.inspector.partition import count_subgraphs, subgraphs

    shape = [[1, 4, 4, 8]]
    names = ["s0", "s1", "s2", "a", "b"]
    nodes = {n: DevNode(n, "nndct_relu", {}, shape, shape, device="dpu") for n in names}
    for parent, child in (("s0", "a"), ("s1", "a"), ("s1", "b"), ("s2", "b")):
        nodes[parent].children.append(nodes[child])
        nodes[child].parents.append(nodes[parent])
    found = subgraphs([nodes[n] for n in names])
    assert [[n.name for n in group] for group in found["dpu"]] == [["s0", "s1", "a", "b"], ["s2", "b"]]
    assert found["cpu"] == []
    # a node whose inputs all run elsewhere starts a set of its own; a CPU node between keeps them apart
    order = ["x", "c", "y"]
    devices = {"x": "dpu", "c": "cpu", "y": "dpu"}
    groups = count_subgraphs(3, lambda i: devices[order[i]], lambda i: [i - 1] if i else [],
                             lambda i: [i + 1] if i < 2 else [])
    assert groups == {"dpu": [[0], [2]], "cpu": [[1]]}
