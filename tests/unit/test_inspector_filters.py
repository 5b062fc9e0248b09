"""The inspector's filters and partition on single nodes, against what vai_q_pytorch 3.5's rule-based Inspector
printed for the same ops (the messages below are quoted from tests/inspect_golden/refs/, which it wrote)."""

from __future__ import annotations

import pytest

from container_payload.inspector import targets
from container_payload.inspector.filters import FILTERS, DevNode
from container_payload.inspector.partition import CPU, DPU, allocate, subgraphs

B4096, B512 = targets.by_name("DPUCZDX8G_ISA1_B4096"), targets.by_name("DPUCZDX8G_ISA1_B512")
C20B14, AHX8H = targets.by_name("DPUCV2DX8G_ISA1_C20B14"), targets.by_name("DPUCAHX8H_ISA2")


def conv(op: str = "nndct_conv2d", *, k=(3, 3), s=(1, 1), d=(1, 1), pad=(1, 1, 1, 1), ic=16, oc=16, hw=32,
         weight=None, **attrs) -> DevNode:
    out_hw = hw // s[0]
    depthwise = "depthwise" in op
    weight = weight or ([1 if depthwise else oc, k[1], k[0], ic if not depthwise else oc])
    return DevNode("m/conv", op, {"kernel": list(k), "stride": list(s), "dilation": list(d), "pad": list(pad),
                                  **attrs},
                   [[1, hw, hw, ic]], [[1, out_hw, out_hw, oc]], weight_shape=list(weight))


def verdict(node: DevNode, target) -> tuple[bool, str]:
    return FILTERS[node.op](node, target)


def test_a_conv_too_wide_for_the_weight_bank():
    node = conv(k=(3, 3), ic=3072, oc=256, hw=4, weight=[256, 3, 3, 3072])
    assert verdict(node, B512) == (False, (
        "Weights([256, 3, 3, 3072]) is too large to be loaded into parameter buffer. 'kernel_h * kernel_w  *  "
        "⌈input_channel / weights_bank_width⌉ * ⌈output_channel_parallel / weights_bank_num⌉(3456)' is "
        "supporsed to be less equal than 2048."))
    assert verdict(node, B4096) == (True, "")


def test_conv_kernel_limit():
    ok, msg = verdict(conv(k=(17, 17), pad=(8, 8, 8, 8)), B4096)
    assert not ok and msg == f"'kernel'(17 x 17) is not in DPU supported range({list(range(1, 17))})."


def test_depthwise_pad_beyond_the_alu_limit_and_no_depthwise_engine():
    node = conv("nndct_depthwise_conv2d", k=(3, 3), d=(24, 24), pad=(24, 24, 24, 24))
    assert verdict(node, B4096) == (False, "pad_left(24) is not in range.")
    assert verdict(conv("nndct_depthwise_conv2d"), AHX8H) == (False, "DPUCAHX8H_ISA2 does not have "
                                                                     "depthwise-conv-engine.")
    assert verdict(conv("nndct_depthwise_conv2d"), B4096) == (True, "")


def test_transposed_conv_output_padding():
    node = conv("nndct_conv_transpose_2d", k=(3, 3), s=(2, 2), output_padding=[1, 1])
    assert verdict(node, B4096) == (False, "DPU does not support output_padding.")


def test_pools_per_engine():
    pool = DevNode("m/pool", "nndct_maxpool", {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]},
                   [[1, 32, 32, 16]], [[1, 16, 16, 16]])
    assert verdict(pool, C20B14) == (False, "DPUCV2DX8G_ISA1_C20B14 does not support nndct_maxpool.")
    assert verdict(pool, B4096) == (True, "")
    avg = DevNode("m/avg", "nndct_avgpool", {"kernel": [16, 16], "stride": [16, 16], "pad": [0, 0, 0, 0]},
                  [[1, 32, 32, 16]], [[1, 2, 2, 16]])
    assert verdict(avg, AHX8H) == (False, "'kernel'(16 x 16) is not in DPU supported range([1, 2, 3, 4, 5, 6, 7, "
                                          "8]).")
    assert verdict(avg, C20B14) == (False, "DPUCV2DX8G_ISA1_C20B14 does not support nndct_avgpool.")


def test_eltwise_per_engine_and_mul_by_a_constant():
    x = DevNode("m/x", "nndct_relu", out_shapes=[[1, 8, 8, 16]])
    add = DevNode("m/add", "nndct_elemwise_add", {}, [[1, 8, 8, 16]] * 2, [[1, 8, 8, 16]], parents=[x, x])
    assert verdict(add, C20B14) == (False, "DPUCV2DX8G_ISA1_C20B14 does not have eltwise-engine")
    assert verdict(add, B4096) == (True, "")
    const = DevNode("m/c", "nndct_const", {"data": [0.5] * 16}, [], [[16]])
    mul = DevNode("Attention::Attention/ret.11", "nndct_elemwise_mul", {}, [[64, 1, 16], [16]],
                  [[64, 1, 16]], parents=[x, const])
    assert verdict(mul, AHX8H) == (False, "Try to convert mul to DepthwiseConv2d failed.DPUCAHX8H_ISA2 does not have "
                                          "depthwise-conv-engine.DPUCAHX8H_ISA2 does not support eltwise MUL.")
    channel_scale = DevNode("m/c", "nndct_const", {"data": [0.5] * 16}, [], [[16]])
    scaled = DevNode("m/mul", "nndct_elemwise_mul", {}, [[1, 8, 8, 16], [16]], [[1, 8, 8, 16]],
                     parents=[x, channel_scale])
    assert verdict(scaled, B4096) == (True, "")  # a 1x1 depthwise conv on the ALU


BILINEAR = {"mode": "BILINEAR", "align_corners": False, "half_pixel_centers": True}
ALIGNED = {"mode": "BILINEAR", "align_corners": True, "half_pixel_centers": False}


@pytest.mark.parametrize("attrs,in_hw,out_hw,target,expected", [
    (BILINEAR, 4, 64, B4096,
     "Try to convert BlinearUpsamle2d to transpose depthwise conv2d failed.nndct_resize output / input scale is "
     "[16.0, 16.0]DPU does not support BILINEAR mode.(only support NEAREST mode)."),
    # align_corners is looked at only when the transposed depthwise conv cannot be had
    (ALIGNED, 16, 32, AHX8H, "DPU does not support align_corners = True"),
    (ALIGNED, 16, 32, B4096, ""),
    (BILINEAR, 16, 32, B4096, ""),
    ({"mode": "NEAREST", "align_corners": False, "half_pixel_centers": False}, 16, 32, AHX8H, ""),
])
def test_resize(attrs, in_hw, out_hw, target, expected):
    node = DevNode("m/up", "nndct_resize", dict(attrs), [[1, in_hw, in_hw, 6]], [[1, out_hw, out_hw, 6]])
    assert verdict(node, target) == (expected == "", expected)


def test_leaky_relu_slope_and_hard_sigmoid_without_an_alu():
    leaky = DevNode("m/l", "nndct_leaky_relu", {"alpha": 0.1}, [[1, 8, 8, 4]], [[1, 8, 8, 4]])
    assert verdict(leaky, B4096) == (False, "Its alpa is 0.1, but DPU only support 0.1015625.")
    leaky.attrs["alpha"] = 26 / 256
    assert verdict(leaky, B4096) == (True, "")
    hsig = DevNode("m/h", "nndct_hsigmoid", {}, [[1, 8, 8, 4]], [[1, 8, 8, 4]])
    assert verdict(hsig, AHX8H) == (False, "This target does not support single hard-sigmoid.")


def chain(*ops: str) -> list[DevNode]:
    nodes = [DevNode(f"m/{i}", op, {}, [[1, 8, 8, 4]], [[1, 8, 8, 4]]) for i, op in enumerate(ops)]
    for a, b in zip(nodes, nodes[1:], strict=False):
        a.children.append(b)
        b.parents.append(a)
    return nodes


def test_allocation_by_op_kind_and_subgraphs():
    nodes = chain("nndct_input", "nndct_relu", "nndct_sigmoid", "nndct_GELU", "nndct_relu", "nndct_return")
    allocate(nodes, B4096)
    assert [(n.device, n.constraint) for n in nodes[:5]] == [
        (DPU, None), (DPU, None), (CPU, "DPU does not support nndct_sigmoid"),
        (CPU, "nndct_GELU can't be converted to XIR."), (DPU, None)]
    groups = subgraphs(nodes)
    assert [[n.name for n in g] for g in groups[DPU]] == [["m/0", "m/1"], ["m/4"]]
    assert [[n.name for n in g] for g in groups[CPU]] == [["m/2", "m/3"]]


def test_a_constant_read_only_by_cpu_ops_and_a_reshape_that_changes_the_batch():
    const = DevNode("m/c", "nndct_const", {}, [], [[1, 4]])
    nodes = chain("nndct_input", "nndct_sigmoid")
    const.children.append(nodes[1])
    nodes[1].parents.append(const)
    allocate([const, *nodes], B4096)
    assert (const.device, const.constraint) == (CPU, "All the children nodes are assigned to CPU.")
    first = chain("nndct_input", "nndct_relu", "nndct_reshape", "nndct_sigmoid")
    first[2].out_shapes = [[8, 32]]
    allocate(first, B4096)
    assert (first[2].device, first[2].constraint) == (CPU, "First dimension is changed.")
