"""The deployable graph (container_payload/inspector/deploy.py) on small models: the permutes nndct's layout
transform inserts, merges and drops, the adaptive pools it converts, the size arithmetic it folds, NHWC shapes, and
where vai_q_pytorch's own Inspector would fail. tests/inspect_golden/check.py compares whole models with nndct."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from container_payload.graph.nndct import capture
from container_payload.inspector import partition, targets
from container_payload.inspector.deploy import deployable_graph, nndct_failure

B4096 = targets.by_name("DPUCZDX8G_ISA1_B4096")
TO_NCHW = "quantizer insert this permute operation to convert data layout from 'NHWC' to 'NCHW' for deployment."
TO_NHWC = "quantizer insert this permute operation to convert data layout from 'NCHW' to 'NHWC' for deployment."


def dev(model: nn.Module, *size: int, nndct_names: bool = True):
    torch.manual_seed(0)
    return deployable_graph(capture(model.eval(), torch.randn(1, *size), relu6_as_relu=True,
                                    nndct_names=nndct_names))


def table(nodes) -> list:
    return [(n.op, n.out_shapes) for n in nodes if n.op != partition.RETURN]


class Classifier(nn.Module):
    def __init__(self, pool=1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(8 * pool * pool, 4)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x).contiguous()))
        return self.fc(x.view(x.size(0), -1))


def test_a_flatten_after_a_pool_gets_a_permute_back_to_nchw():
    nodes = dev(Classifier(), 3, 16, 16)
    assert table(nodes) == [
        ("nndct_input", [[1, 16, 16, 3]]), ("nndct_conv2d", [[1, 16, 16, 8]]), ("nndct_relu", [[1, 16, 16, 8]]),
        ("nndct_avgpool", [[1, 1, 1, 8]]), ("nndct_permute", [[1, 8, 1, 1]]), ("nndct_reshape", [[1, 8]]),
        ("nndct_dense", [[1, 4]])]
    permute = nodes[4]
    assert permute.name == nodes[3].name + "_sink_transpose_0"
    assert permute.attr("order") == [0, 3, 1, 2] and permute.messages == [TO_NCHW]
    # the pool's kernel comes from the NHWC shapes; contiguous and the size read are gone
    assert nodes[3].attr("kernel") == [16, 16] and nodes[3].attr("stride") == [16, 16]
    assert nodes[5].parents == [permute] and permute.parents == [nodes[3]]
    partition.allocate(nodes, B4096)
    assert all(n.device == partition.DPU for n in nodes if n.op != partition.RETURN)
    assert nndct_failure(nodes) is None


def test_nodes_carry_nndcts_names_and_the_graph_does_not_depend_on_them():
    nodes = dev(Classifier(), 3, 16, 16)
    names = [n.name for n in nodes if n.op != partition.RETURN]
    assert names[0] == "Classifier::input_0"
    assert names[1].startswith("Classifier::Classifier/Conv2d[conv]/")
    assert names[3].startswith("Classifier::Classifier/AdaptiveAvgPool2d[pool]/")
    assert names[4] == names[3] + "_sink_transpose_0"
    assert names[6].startswith("Classifier::Classifier/Linear[fc]/")
    assert table(dev(Classifier(), 3, 16, 16, nndct_names=False)) == table(nodes)


def test_an_adaptive_pool_that_does_not_divide_goes_to_the_cpu_where_nndct_fails():
    nodes = dev(Classifier(pool=3), 3, 16, 16)
    pool = next(n for n in nodes if "pool" in n.op)
    assert pool.op == "nndct_adaptive_avg_pool2d" and pool.device == partition.CPU
    assert pool.attr("nndct_error") == "AttributeError: KERNEL"
    assert "does not divide" in pool.constraint
    partition.allocate(nodes, B4096)  # the verdict set here stays
    assert pool.device == partition.CPU
    assert nndct_failure(nodes) == ("AttributeError: KERNEL", pool.name)


def test_an_adaptive_pool_that_divides_becomes_an_average_pool():
    nodes = dev(Classifier(pool=4), 3, 16, 16)
    pool = next(n for n in nodes if "pool" in n.op)
    assert pool.op == "nndct_avgpool" and pool.attr("kernel") == [4, 4] and pool.attr("stride") == [4, 4]
    assert pool.out_shapes == [[1, 4, 4, 8]]


class TokenMixer(nn.Module):
    """conv -> permute to NHWC -> Linear over channels -> permute back -> conv: the model's own permutes cancel
    the ones nndct inserts, so nothing is left to the CPU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.fc(self.conv(x).permute(0, 2, 3, 1))
        return self.out(y.permute(0, 3, 1, 2))


def test_permutes_the_model_writes_cancel_the_inserted_ones():
    nodes = dev(TokenMixer(), 3, 8, 8)
    assert table(nodes) == [("nndct_input", [[1, 8, 8, 3]]), ("nndct_conv2d", [[1, 8, 8, 8]]),
                            ("nndct_dense", [[1, 8, 8, 8]]), ("nndct_conv2d", [[1, 8, 8, 2]])]
    partition.allocate(nodes, B4096)
    assert len(partition.subgraphs(nodes)[partition.DPU]) == 1


class Unflatten(nn.Module):
    """Tokens back to a feature map: view [N, C, HW] -> [N, C, H, W] before a conv gets a permute to NHWC."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.conv = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        t = self.fc(x.flatten(2).transpose(1, 2))  # [N, HW, C]
        return self.conv(t.transpose(1, 2).reshape(x.shape[0], 8, 4, 4))


def test_a_reshape_to_a_feature_map_gets_a_permute_to_nhwc():
    nodes = dev(Unflatten(), 8, 4, 4)
    swim = [n for n in nodes if "swim_transpose" in n.name]
    assert len(swim) == 1 and swim[0].attr("order") == [0, 2, 3, 1] and swim[0].messages == [TO_NHWC]
    assert swim[0].parents[0].op == "nndct_reshape" and swim[0].out_shapes == [[1, 4, 4, 8]]
    assert swim[0].children[0].op == "nndct_conv2d"
    # the size read x.shape[0] is folded into the reshape: no shape node is left
    assert not any(n.op == "nndct_shape" for n in nodes)
    partition.allocate(nodes, B4096)
    assert swim[0].device == partition.CPU and swim[0].constraint == "DPU does not support nndct_permute"


class Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x.flatten(2))


def test_a_3d_permute_is_where_nndcts_inspector_fails():
    nodes = dev(Conv1d(), 3, 4, 4)
    swim = next(n for n in nodes if "swim_transpose" in n.name)
    assert swim.attr("order") == [0, 2, 1] and swim.out_shapes == [[1, 16, 3]]
    assert swim.attr("nndct_error") == "KeyError: (0, 2, 1)"
    assert nndct_failure(nodes) == ("KeyError: (0, 2, 1)", swim.name)
    # the conv1d's NLC output goes to the graph's return as it is (no permute before a return)
    conv = next(n for n in nodes if n.op == "nndct_conv1d")
    assert conv.out_shapes == [[1, 16, 4]] and conv.children[0].op == partition.RETURN


class Gate(nn.Module):
    """conv(x) * x.mean(1): aten::mean is an op nndct does not know (a custom op), so the layout stops there: a
    permute back to NCHW before it, and one to NHWC after it where the product joins the conv's NHWC output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) * x.mean(1, keepdim=True)


def test_a_binary_op_between_layouts_gets_a_neighbor_permute():
    nodes = dev(Gate(), 3, 4, 4)
    assert [(n.op, n.out_shapes, n.attr("order")) for n in nodes if n.op != partition.RETURN] == [
        ("nndct_input", [[1, 4, 4, 3]], None),
        ("nndct_permute", [[1, 3, 4, 4]], [0, 3, 1, 2]),
        ("nndct_conv2d", [[1, 4, 4, 4]], None),
        ("aten::mean", [[1, 1, 4, 4]], None),
        ("nndct_permute", [[1, 4, 4, 1]], [0, 2, 3, 1]),
        ("nndct_elemwise_mul", [[1, 4, 4, 4]], None)]
    sink, neighbor, mul = nodes[1], nodes[4], nodes[5]
    assert sink.name == "Gate::input_0_sink_transpose_0" and sink.messages == [TO_NCHW]
    assert neighbor.name == mul.name + "_neighbor_transpose_0" and neighbor.messages == []
    assert mul.parents == [nodes[2], neighbor]


class ParamGate(nn.Module):
    """The same with a parameter instead: nothing reachable from the input leads to the neighbor permute, so
    nndct's merge pass never reaches it and drops it with the other inserted permutes it did not keep."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.w = nn.Parameter(torch.ones(1, 4, 4, 4))

    def forward(self, x):
        return self.conv(x) * torch.sigmoid(self.w.expand(1, 4, 4, 4))


def test_a_permute_no_walk_from_a_source_reaches_is_dropped():
    nodes = dev(ParamGate(), 3, 4, 4)
    assert not any(n.op == "nndct_permute" for n in nodes)


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.5))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.conv(x) * self.gamma)


def test_a_mul_by_a_parameter_is_where_nndcts_filter_fails():
    nodes = dev(LayerScale(), 3, 4, 4)
    mul = next(n for n in nodes if n.op == "nndct_elemwise_mul")
    # nndct's in_tensors[1] is the parameter, without a producer: filter_eltwise reads its .node.op
    assert mul.attr("input_nodes")[1] is None and [p.op for p in mul.parents] == ["nndct_conv2d"]
    assert mul.in_shapes[1] == [8, 1, 1]
    assert nndct_failure(nodes) == ("AttributeError: 'NoneType' object has no attribute 'op'", mul.name)
    partition.allocate(nodes, B4096)  # hostctl's filters judge it all the same
    assert mul.device in (partition.DPU, partition.CPU)


def test_a_depthwise_channel_multiplier_is_where_nndcts_equalization_fails():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(8, 8, 1))
    nodes = dev(model, 4, 6, 6)
    dw = next(n for n in nodes if n.op == "nndct_depthwise_conv2d")
    assert dw.weight_shape == [2, 3, 3, 4]  # [multiplier, kh, kw, in]: nndct's layout
    assert nndct_failure(nodes) == (
        "ValueError: operands could not be broadcast together with shapes (8,1) (4,18) ", dw.name)
    # without a conv after it, equalization has no pair and nndct goes on
    assert nndct_failure(dev(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4)), 4, 6, 6)) is None
