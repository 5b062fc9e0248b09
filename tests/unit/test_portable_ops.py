"""The portable quantizer on what users bring: size checks in forward, dict outputs, and each op family nndct
quantizes, named as nndct names it (names checked against vai_q_pytorch 3.5 on the same model)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import float_run
from torch import nn

from container_payload.backends import BackendError
from container_payload.backends.portable import PortableBackend, engine
from container_payload.backends.portable import fixpoint as fxp
from container_payload.backends.portable.engine import Runner, adjust
from container_payload.backends.portable.groups import quantization_graph as capture


class ViewShuffle(nn.Module):
    """A channel shuffle: views of memory that a model written for NCHW knows to be NCHW."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class UnevenPool(nn.Module):
    """A pool whose output size does not divide its input's: nndct leaves it unquantized, so a conv reads floats."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return F.interpolate(self.head(self.pool(self.conv(x))), size=x.shape[2:], mode="nearest")


def test_a_conv_reading_an_unquantized_float_keeps_the_graph_nchw(tmp_path):
    # a float input makes the conv's sums round, in an order that depends on the memory layout
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    b = PortableBackend(UnevenPool().eval(), str(tmp_path), (3, 8, 8), quant_opt=0, warn=lambda m: None)
    b.calibrate([x])
    q = b.quantized()
    pool = next(n for n in q.g.nodes if n.op == "adaptive_avg_pool2d")
    assert pool.attrs.get("skip_quant") and q.out_fp.get(pool.name) is None
    assert not q.channels_last
    assert torch.equal(q(x), q.general()(x))


def test_a_graph_with_views_stays_nchw(tmp_path):
    torch.manual_seed(0)
    model = ViewShuffle().eval()
    x = torch.randn(2, 3, 8, 8)
    b = PortableBackend(model, str(tmp_path), (3, 8, 8), quant_opt=0, warn=lambda m: None)
    b.calibrate([x])
    q = b.quantized()
    assert not q.channels_last
    assert q(x).shape == (2, 4, 8, 8)


def test_calibration_takes_the_fast_hswish_gate_with_the_same_results(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = MobileBlock().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 32, 32, generator=gen) * 2 for _ in range(4)]
    used = []
    fast = engine.fast_hswish_gate
    # activations, not the 256 values of the check at load
    monkeypatch.setattr(engine, "fast_hswish_gate", lambda x, **kw: used.append(x.numel() > 256) or fast(x, **kw))

    def run(where):
        b = PortableBackend(model, str(tmp_path / where), (3, 32, 32), quant_opt=3, warn=lambda m: None)
        b.calibrate(batches)
        return (tmp_path / where / "quant_info.json").read_text(), b.bias_corr, b.quantized().general()(batches[0])

    with_gate = run("fast")
    assert sum(used) == 2 * len(batches)  # both hswish nodes read quantized conv outputs, in every batch
    monkeypatch.setattr(engine, "quantized_sources", lambda g: {})
    used.clear()
    general = run("general")
    assert not any(used)
    assert with_gate[:2] == general[:2] and torch.equal(with_gate[2], general[2])


class PadToMultiple(nn.Module):
    """segmentation_models_pytorch style: reject sizes that are not a multiple of the output stride, pad, crop."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise RuntimeError(f"Wrong input shape height={h}, width={w}")
        ph, pw = (8 - h % 8) % 8, (8 - w % 8) % 8
        y = F.pad(x, [0, pw, 0, ph]) if ph or pw else x
        return self.up(F.relu(self.down(y)))[..., :h, :w]


def test_python_control_flow_on_sizes_is_traced_for_the_sample():
    model = PadToMultiple().eval()
    x = torch.randn(2, 3, 12, 12)
    g = capture(model, x, relu6_as_relu=False)
    ops = [n.op for n in g.nodes]
    # the size arithmetic of the padding is traced: shape nodes, and const nodes (numbered first) for its numbers
    assert ops == ["const"] * 6 + ["input", "shape", "shape", "aten::remainder", "rsub", "aten::remainder",
                                   "aten::remainder", "rsub", "aten::remainder", "pad_nd", "conv2d", "relu",
                                   "conv_transpose_2d", "strided_slice"]  # the crop's two slices: one node
    assert not any(k.startswith(("nndct_const", "nndct_shape", "aten_remainder")) for k in g.output_keys)
    # rsub is quantizable, so nndct configures its int results too, never quantized (seen on a real run:
    # "nndct_rsub_10": [[8, null]], "nndct_rsub_13": [[8, null]])
    # const nodes in nndct's order (its generated PadToMultiple.py on a real run): the pattern its depth-first
    # walk matched first (remainder) before the next (rsub), each in the walk's order, not execution order
    assert [c.children[0].name for c in g.nodes if c.op == "const"] == [
        "aten_remainder_9", "aten_remainder_11", "aten_remainder_12", "aten_remainder_14", "nndct_rsub_10",
        "nndct_rsub_13"]
    rsubs = [n for n in g.nodes if n.op == "rsub"]
    assert all(n.name in g.output_keys and n.attrs["skip_quant"] for n in rsubs)
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))
    with pytest.raises(BackendError, match="shape \\(1, 3, 10, 10\\).*Wrong input shape"):
        capture(model, torch.randn(1, 3, 10, 10), relu6_as_relu=False)


@pytest.mark.parametrize("out, what", [(lambda y: {"out": y, "aux": y}, "a dict with keys 'out', 'aux'"),
                                       (lambda y: (y, y), "a tuple")])
def test_models_that_return_several_tensors_get_a_one_line_error(out, what):
    class Multi(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return out(self.conv(x))

    with pytest.raises(BackendError) as e:
        capture(Multi(), torch.randn(1, 3, 4, 4), relu6_as_relu=False)
    msg = str(e.value)
    assert "\n" not in msg and what in msg and "model(x)['out']" in msg


class Zoo(nn.Module):
    """One of each op family nndct quantizes for the DPU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.hs = nn.Hardswish()
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.se1 = nn.Conv2d(8, 4, 1)
        self.se2 = nn.Conv2d(4, 8, 1)
        self.hsig = nn.Hardsigmoid()
        self.pr = nn.PReLU(8)
        self.lr = nn.LeakyReLU(0.1)
        self.r6 = nn.ReLU6()
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.drop = nn.Dropout2d(0.1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError("size")
        y = self.hs(self.stem(x))
        y = self.dw(y)
        g = self.hsig(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        y = y * g
        b, c, hh, ww = y.size()
        y = y.view(b, 2, c // 2, hh, ww).transpose(1, 2).contiguous().view(b, -1, hh, ww)  # channel shuffle
        y = self.r6(self.lr(self.pr(y)))
        z = torch.sigmoid(y) * torch.tanh(y)
        m = y.mean((2, 3), keepdim=True) + z.sum(1, keepdim=True)
        y = torch.cat([self.up(F.max_pool2d(y + m, 2)), F.pad(y, (0, 0, 0, 0))], 1).clamp(-4, 4)
        y = torch.stack([y, y], 0).sum(0)
        return F.softmax(self.head(self.drop(y)), 1)


# vai_q_pytorch 3.5 (torch 1.13) on this model: the same 39 nodes (its <Class>.py), the same 13 parameter and 23
# output entries of quant_info.json with equal fix positions, and bit-identical test-mode outputs
ZOO_NODES = [
    "nndct_const_0", "nndct_input_1", "nndct_conv2d_2", "nndct_hswish_3", "nndct_depthwise_conv2d_4",
    "nndct_adaptive_avg_pool2d_5", "nndct_conv2d_6", "nndct_relu_7", "nndct_conv2d_8", "nndct_hsigmoid_9",
    "nndct_elemwise_mul_10", "nndct_shape_11", "nndct_shape_12", "nndct_shape_13", "nndct_shape_14",
    "nndct_floor_divide_15", "nndct_reshape_16", "nndct_transpose_17", "nndct_contiguous_18", "nndct_reshape_19",
    "nndct_prelu_20", "nndct_leaky_relu_21", "nndct_relu6_22", "nndct_sigmoid_23", "nndct_tanh_24",
    "nndct_elemwise_mul_25", "aten_mean_26", "nndct_sum_27", "nndct_elemwise_add_28", "nndct_elemwise_add_29",
    "nndct_maxpool_30", "nndct_conv_transpose_2d_31", "nndct_pad_nd_32", "nndct_concat_33", "nndct_clamp_34",
    "nndct_stack_35", "nndct_sum_36", "nndct_conv2d_37", "nndct_softmax_38"]
ZOO_OUTPUTS = [
    "nndct_input_1", "nndct_conv2d_2", "nndct_hswish_3", "nndct_depthwise_conv2d_4", "nndct_adaptive_avg_pool2d_5",
    "nndct_relu_7", "nndct_conv2d_8", "nndct_hsigmoid_9", "nndct_transpose_17", "nndct_relu6_22",
    "nndct_elemwise_mul_25", "nndct_sum_27", "nndct_elemwise_add_28", "nndct_elemwise_add_29", "nndct_maxpool_30",
    "nndct_concat_33", "nndct_sum_36", "nndct_conv2d_37", "nndct_softmax_38", "nndct_sigmoid_23", "nndct_tanh_24",
    "aten_mean_26", "nndct_stack_35"]


def test_each_op_family_is_named_as_nndct_names_it():
    model = Zoo().eval()
    x = torch.randn(2, 3, 16, 16)
    g = capture(model, x, relu6_as_relu=False)
    # `c // 2` makes a const node, numbered before the input; Dropout2d() is removed; mean is an op nndct's
    # parser does not match under torch >= 1.13 (float, under its aten name), stack one it keeps in float
    assert [n.name for n in g.nodes] == ZOO_NODES
    assert g.output_keys == ZOO_OUTPUTS
    assert g.unsupported == ["aten_mean_26 (aten::mean)", "nndct_stack_35 (stack)"]
    prelu = next(n for n in g.nodes if n.op == "prelu")
    assert prelu.weight_name == "Zoo::pr.weight" and not prelu.bias_name
    with torch.no_grad():  # the DPU's hsigmoid/hswish differ from torch's a little
        torch.testing.assert_close(float_run(g, x), model(x), rtol=0.05, atol=0.05)


def test_inplace_dropout2d_is_an_op_nndct_does_not_know():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout2d(inplace=True), nn.Conv2d(4, 2, 1)).eval()
    g = capture(model, torch.randn(1, 3, 4, 4), relu6_as_relu=False)
    # seen on smp FPN: `aten_feature_dropout__N`, quantized because it feeds a conv
    assert [n.name for n in g.nodes] == ["nndct_input_0", "nndct_conv2d_1", "aten_feature_dropout__2",
                                         "nndct_conv2d_3"]
    assert "aten_feature_dropout__2" in g.output_keys


def test_plain_number_operands_become_const_nodes_numbered_first():
    class HardSwishByHand(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return y * F.relu6(y + 3.0) / 6.0

    model = HardSwishByHand().eval()
    x = torch.randn(2, 3, 4, 4)
    g = capture(model, x, relu6_as_relu=False)
    assert [n.name for n in g.nodes] == [
        "nndct_const_0", "nndct_const_1", "nndct_input_2", "nndct_conv2d_3", "nndct_elemwise_add_4",
        "nndct_relu6_5", "nndct_elemwise_mul_6", "nndct_elemwise_div_7"]
    assert g.nodes[4].parents == [g.nodes[3], g.nodes[0]]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


def test_hswish_and_hsigmoid_use_the_dpu_approximations():
    x = torch.linspace(-4, 4, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    g = capture(nn.Sequential(nn.Hardswish(), nn.Hardsigmoid()).eval(), x, relu6_as_relu=False)
    assert [n.name for n in g.nodes] == ["nndct_input_0", "nndct_hswish_1", "nndct_hsigmoid_2"]
    gate = fxp.quantize_act(F.relu6(x + 3) * (2731 / 16384), 7)
    hswish = x * gate
    torch.testing.assert_close(float_run(g, x), F.relu6(hswish + 3) * (2731 / 16384), rtol=0, atol=0)


def test_backend_quantizes_prelu_weights_and_new_op_outputs(tmp_path):
    model = Zoo().eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 16, 16, generator=g) for _ in range(2)]
    warnings = []
    b = PortableBackend(model, str(tmp_path), (3, 16, 16), quant_opt=0, warn=warnings.append)
    b.calibrate(batches)
    info = b.quant_info
    assert "Zoo::pr.weight" in info["param"]
    assert set(info["output"]) == {"Zoo::" + k for k in ZOO_OUTPUTS}
    assert any("aten::mean" in w and "float" in w for w in warnings)
    y = b.quantized()(batches[0])
    assert y.shape == (2, 4, 16, 16) and torch.isfinite(y).all()


def test_export_adjustments_for_hsigmoid_and_hswish():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Hardswish(), nn.Conv2d(3, 3, 1), nn.Hardsigmoid()).eval()
    g = capture(model, torch.randn(1, 3, 4, 4), relu6_as_relu=False)
    assert g.output_keys == ["nndct_input_0", "nndct_conv2d_1", "nndct_hswish_2", "nndct_conv2d_3",
                             "nndct_hsigmoid_4"]
    par = {n.weight_name: 6 for n in g.nodes if n.weight_name}
    par.update({n.bias_name: 6 for n in g.nodes if n.bias_name})
    fps = {"param": par, "output": {"nndct_input_0": 6, "nndct_conv2d_1": -1, "nndct_hswish_2": 9,
                                     "nndct_conv2d_3": 4, "nndct_hsigmoid_4": 5}}
    adjust(g, fps)
    # hswish input raised to 0, its output to at most input + 7; the hsigmoid output raised to 7
    assert fps["output"] == {"nndct_input_0": 6, "nndct_conv2d_1": 0, "nndct_hswish_2": 7, "nndct_conv2d_3": 4,
                             "nndct_hsigmoid_4": 7}


def test_chunk_is_traced_as_slices_as_nndct_traces_it():
    class Shuffle(nn.Module):
        """ShuffleNetV2's unit: split in two by chunk, one half through convs, concat, channel shuffle."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, F.relu(self.conv(b))], 1)
            n, c, h, w = y.size()
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    model = Shuffle().eval()
    x = torch.randn(2, 4, 4, 4)
    g = capture(model, x, relu6_as_relu=False)
    # vai_q_pytorch replaces chunk by slicing while it traces; the last piece ends at the traced size, and each
    # chain of slices is one strided_slice (seen on torchvision's ShuffleNetV2: strided_slice, shape,
    # strided_slice)
    assert [n.op for n in g.nodes][:6] == ["const", "input", "strided_slice", "shape", "strided_slice", "conv2d"]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


class SharedValues(nn.Module):
    """Values read by more than one op, views and identities: what the engine must not overwrite in place."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        y = self.a(x)
        z = F.relu(y) + y  # y read twice: the ReLU may not overwrite it
        w = self.drop(self.b(z))  # an identity in eval mode: the same tensor under two names
        v = F.relu6(w)
        flat = v.view(v.shape[0], -1)  # a view of v, read after v's ReLU
        return F.leaky_relu(v, 0.1) + flat.view_as(v) + F.relu(w) + x.mean()


def test_in_place_ops_never_touch_a_value_another_op_still_reads():
    model = SharedValues().eval()
    x = torch.randn(2, 3, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    runner = Runner(g)
    assert runner.may_overwrite  # something does run in place here
    x_before = x.clone()
    y = float_run(g, x)
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(x, x_before)  # the caller's batch is never written
    # the leaky ReLU runs with the DPU's slope, as nndct's does; everything else is the float model's
    with torch.no_grad():
        v = F.relu6(model.b(F.relu(model.a(x)) + model.a(x)))
        expected = expected - F.leaky_relu(v, 0.1) + F.leaky_relu(v, 26 / 256)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fp", range(-3, 13))
def test_hswish_gate_on_a_quantized_input_in_three_passes_gives_nndct_gate_bits(fp):
    x = torch.arange(-128, 128, dtype=torch.float32) * 2.0 ** -fp  # every value a tensor quantized at fp holds
    assert engine.fast_hswish_gate_holds(fp)
    assert torch.equal(engine.fast_hswish_gate(x), engine.hswish_gate(x))


def test_hswish_gate_check_rejects_a_formula_that_differs(monkeypatch):
    monkeypatch.setattr(engine, "_GATE_OFFSET", 8256.0 / 128.0)  # one step of 2^-7 lower
    assert not all(engine.fast_hswish_gate_holds(fp) for fp in range(0, 13))


class MobileBlock(nn.Module):
    """conv-BN-hswish, a squeeze-excitation gate (mul), a residual add, a max pool and a ReLU on quantized values:
    every kind of node that test mode rounds without its exact-half pass; convs and a bilinear resize keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish())
        self.c2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1),
                                nn.Hardsigmoid())
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        y = b * self.se(b) + a
        y = F.relu(F.max_pool2d(y, 2))
        return F.interpolate(self.head(y), scale_factor=2.0, mode="bilinear", align_corners=False)


def test_test_mode_shortcuts_on_quantized_inputs_give_the_same_bits(tmp_path):
    torch.manual_seed(0)
    model = MobileBlock().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 32, 32, generator=gen) * 2 for _ in range(3)]
    b = PortableBackend(model, str(tmp_path), (3, 32, 32), quant_opt=3, warn=lambda m: None)
    b.calibrate(batches)
    q = b.quantized()
    ops = {n.name: n.op for n in q.g.nodes}
    # the ReLU reads a max pool of a quantized add (the pool is fused into it, not quantized); the convs and the
    # resize are not among them
    assert sorted(ops[k] for k in q.coarse) == ["elemwise_add", "elemwise_mul", "hswish", "hswish", "relu"]
    assert sorted(ops[k] for k in q.gate_fast) == ["hswish", "hswish"]
    # read by convs alone, these stay integers: the input, the SE gate's pool and ReLU, the ReLU before the head
    assert sorted(ops[k] for k in q.in_units) == ["adaptive_avg_pool2d", "input", "relu", "relu"]
    assert q.channels_last
    general = q.general()
    assert not (general.coarse or general.gate_fast or general.in_units or general.channels_last)
    for x in batches:
        y = q(x)
        assert torch.equal(general(x), y)
        assert y.is_contiguous()  # handed back in the standard layout


class FloatSamePad(nn.Module):
    """timm's Conv2dSame under tracing: the 'same' padding computed with float tensor ops, (ih / stride).ceil()."""

    def __init__(self, traced_float_pad: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.traced_float_pad = traced_float_pad

    def forward(self, x):
        ih = x.shape[-1]
        if self.traced_float_pad and torch.jit.is_tracing():
            pad = torch.clamp(((torch.tensor(ih) / 2).ceil() - 1) * 2 + 3 - ih, min=0)
        else:
            pad = max((-(-ih // 2) - 1) * 2 + 3 - ih, 0)
        return self.conv(F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2]))


@pytest.mark.parametrize("float_pad", [True, False])
def test_a_pad_width_from_a_float_tensor_warns_that_vai_q_pytorch_fails_there(tmp_path, float_pad):
    # nndct drops the aten::Int casts, so F.pad gets float tensors and its calibration raises; the portable
    # backend quantizes the model and says that vai_q_pytorch has no counterpart for the result
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    warnings = []
    b = PortableBackend(FloatSamePad(float_pad).eval(), str(tmp_path), (3, 9, 9), quant_opt=0, warn=warnings.append)
    b.calibrate([x])
    assert b.quantized()(x).shape == (2, 4, 5, 5)
    assert [w for w in warnings if "vai_q_pytorch fails on this model" in w] == (
        [warnings[0]] if float_pad else [])
