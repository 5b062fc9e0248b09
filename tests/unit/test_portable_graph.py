"""The portable quantizer's view of a model: capture, BatchNorm folding, equalization, names, groups, shifts."""

import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import float_run
from torch import nn

from container_payload.backends import BackendError
from container_payload.backends.portable.engine import adjust
from container_payload.backends.portable.equalize import equalize
from container_payload.backends.portable.groups import quantization_graph as capture
from container_payload.models.unet import Unet


def _settle_bn(model: nn.Module, shape, seed=0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


class Residual(nn.Module):
    """conv+bn+relu, conv+bn feeding an add, add feeding a relu, avg pool, 1x1 conv, bilinear upsample, adds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(8, 4, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.side = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(x)) + x)
        return self.up(self.head(self.pool(z))) + self.side(z)


def test_unet_names_and_group_ends():
    model = _settle_bn(Unet(num_classes=3, width=4, depth=3), None)
    g = capture(model, torch.randn(1, 3, 32, 32), relu6_as_relu=True)
    names = [n.name for n in g.nodes]
    # DESIGN.md section 9's example, numbered over the BN-folded graph
    for expected in ("nndct_input_0", "nndct_conv2d_1", "nndct_relu_2", "nndct_maxpool_5",
                     "nndct_conv_transpose_2d_20", "nndct_concat_21"):
        assert expected in names
    assert not any("batch_norm" in n for n in names)
    # outputs: the input, every relu, every max pool, every concat, and the final conv; nothing else
    expected_keys = [n.name for n in g.nodes if n.op in ("input", "relu", "maxpool", "concat")] + [names[-1]]
    assert sorted(g.output_keys) == sorted(expected_keys)
    assert names[-1].startswith("nndct_conv2d_")
    # parameters: a BN-folded conv gains a bias
    conv = next(n for n in g.nodes if n.module_path == "inc.block.0")
    assert conv.weight_name == "Unet::inc.block.0.weight" and conv.bias_name == "Unet::inc.block.0.bias"


def test_residual_model_group_ends():
    model = _settle_bn(Residual(), None)
    g = capture(model, torch.randn(1, 3, 16, 16), relu6_as_relu=True)
    assert [n.name for n in g.nodes] == [
        "nndct_input_0", "nndct_conv2d_1", "nndct_relu_2", "nndct_conv2d_3", "nndct_elemwise_add_4",
        "nndct_relu_5", "nndct_avgpool_6", "nndct_conv2d_7", "nndct_resize_8", "nndct_conv2d_9",
        "nndct_elemwise_add_10"]
    # conv+bn feeding the add has its own entry, the add feeding a relu does not (the relu does); the avg pool,
    # 1x1 convs, the upsample and the last add each have one
    assert g.output_keys == ["nndct_input_0", "nndct_relu_2", "nndct_conv2d_3", "nndct_relu_5", "nndct_avgpool_6",
                             "nndct_conv2d_7", "nndct_resize_8", "nndct_conv2d_9", "nndct_elemwise_add_10"]


@pytest.mark.parametrize("transpose", [False, True])
def test_bn_folding_is_exact_in_float(transpose):
    conv = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2) if transpose else nn.Conv2d(4, 6, 3, padding=1)
    model = _settle_bn(nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU()), None)
    x = torch.randn(2, 4, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    assert [n.op for n in g.nodes] == ["input", "conv_transpose_2d" if transpose else "conv2d", "relu"]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x), rtol=1e-5, atol=1e-5)


def test_unfused_batchnorm_and_shared_module_names():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y + x) + self.conv(y)  # BN after an add stays; conv used twice

    model = _settle_bn(M(), None)
    x = torch.randn(2, 3, 5, 5)
    g = capture(model, x, relu6_as_relu=False)
    ops = [n.op for n in g.nodes]
    assert "batch_norm" in ops
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert convs[0].weight_name == "M::conv.weight"
    # the second call's params carry the id nndct's parser gave the node (-sys.maxsize + its index + 1 here,
    # nothing removed before it), as vai_q_pytorch 3.5 names them (golden model custom_shared_convs)
    assert convs[1].weight_name == f"M::conv.weight.{-sys.maxsize + convs[1].idx + 1}"
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x), rtol=1e-5, atol=1e-5)


def test_equalization_keeps_the_float_function_and_changes_weights():
    model = _settle_bn(Unet(num_classes=3, width=4, depth=2), None, seed=2)
    x = torch.randn(2, 3, 16, 16)
    g = capture(model, x, relu6_as_relu=True)
    before = {n.name: n.weight.clone() for n in g.nodes if n.weight is not None}
    pairs = equalize(g)
    assert pairs > 0
    after = {n.name: n.weight for n in g.nodes if n.weight is not None}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x), rtol=1e-4, atol=1e-4)


def test_capture_follows_the_traced_branch_and_names_failures():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            if x.shape[-1] % 4:  # control flow on sizes: traced for the sample's shape, as nndct traces it
                raise ValueError("width must be a multiple of 4")
            if x.sum() > 0:
                return self.conv(x)
            return F.relu(self.conv(x))

    x = torch.ones(1, 3, 4, 4)
    g = capture(Branchy(), x, relu6_as_relu=False)
    assert [n.name for n in g.nodes] == ["nndct_input_0", "nndct_conv2d_1"]
    with pytest.raises(BackendError, match="failed on a sample of shape \\(1, 3, 4, 5\\).*multiple of 4"):
        capture(Branchy(), torch.ones(1, 3, 4, 5), relu6_as_relu=False)


def test_unknown_ops_run_in_float_under_their_aten_name():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(F.silu(x))

    x = torch.randn(1, 3, 4, 4)
    model = Odd()
    g = capture(model, x, relu6_as_relu=False)
    assert g.unsupported == ["aten_silu_1 (aten::silu)"]
    # an op nndct does not know, feeding a conv, still gets its output quantized, as nndct's input check does
    assert "aten_silu_1" in g.output_keys
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


def _shift_graph():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    g = capture(model, torch.randn(1, 3, 8, 8), relu6_as_relu=False)
    conv = g.nodes[1]
    return g, conv.weight_name, conv.bias_name


@pytest.mark.parametrize("w, i, o, b, expect", [
    # shift_cut = w + i - o in [0, 16]; shift_bias = w + i - b in [min(0, shift_cut - 16), 16]
    (8, 6, 10, 10, (8, 6, 10, 10)),        # all within range
    (8, 6, 16, 10, (8, 6, 14, 10)),        # shift_cut -2: the output position drops to w + i
    (12, 10, 4, 10, (10, 10, 4, 10)),      # shift_cut 18: the weight position drops by 2
    (8, 6, 10, 30, (8, 6, 10, 26)),        # shift_bias -16 below min(0, 4 - 16) = -12: bias drops by 4
    (12, 12, 12, 4, (8, 12, 12, 4)),       # shift_bias 20: the weight position drops by 4
])
def test_shift_constraints(w, i, o, b, expect):
    g, wn, bn = _shift_graph()
    fps = {"param": {wn: w, bn: b}, "output": {"nndct_input_0": i, "nndct_relu_2": o}}
    adjust(g, fps)
    assert (fps["param"][wn], fps["output"]["nndct_input_0"], fps["output"]["nndct_relu_2"],
            fps["param"][bn]) == expect


def test_nearest_resize_inherits_its_input_position():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")

    g = capture(Up(), torch.randn(1, 3, 4, 4), relu6_as_relu=False)
    fps = {"param": {g.nodes[1].weight_name: 7, g.nodes[1].bias_name: 7},
           "output": {"nndct_input_0": 6, "nndct_conv2d_1": 5, "nndct_resize_2": 3}}
    adjust(g, fps)
    assert fps["output"]["nndct_resize_2"] == 5


def test_dropout_and_identity_are_transparent():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Dropout(0.5), nn.ReLU(), nn.Identity(),
                          nn.Conv2d(4, 2, 1), nn.Dropout2d()).eval()
    x = torch.randn(2, 3, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    # aten::dropout and aten::feature_dropout are removed (an in-place Dropout2d is not: see test_portable_ops)
    assert [n.name for n in g.nodes] == ["nndct_input_0", "nndct_conv2d_1", "nndct_relu_2", "nndct_conv2d_3"]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


class _SegHead(nn.Module):
    """torchvision FCN-style: the input's size read first, upsampled back to it at the end, dropout in the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        input_shape = x.shape[-2:]
        y = self.pool(F.relu(self.bn(self.conv(x))))
        return F.interpolate(self.head(self.drop(y)), size=input_shape, mode="bilinear", align_corners=False)


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        x = self.pool(self.conv(x))
        y = x.view(x.size(0), -1)
        y = y.view(y.size(0), -1)  # already that shape: nndct drops the view and its size read
        return self.fc(y) + self.fc2(torch.flatten(x, 1))


class _Skip(nn.Module):
    """UNet-style: upsample to a skip tensor's size (x.size()[2:]), unpacked sizes feeding a view."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        s = self.a(x)
        d = self.b(s)
        n, c, h, w = s.size()
        u = F.interpolate(d, size=s.size()[2:], mode="nearest")
        return torch.cat([s, u + torch.flatten(s, 2).view(n, c, h, w)], 1)


def test_size_reads_are_numbered_as_shape_nodes():
    x = torch.randn(2, 3, 16, 16)
    model = _settle_bn(_SegHead(), None)
    g = capture(model, x, relu6_as_relu=False)
    # aten::size(x, 2), aten::size(x, 3) where x.shape is read; dropout and the folded BN leave no gap
    assert [n.name for n in g.nodes] == ["nndct_input_0", "nndct_shape_1", "nndct_shape_2", "nndct_conv2d_3",
                                         "nndct_relu_4", "nndct_maxpool_5", "nndct_conv2d_6", "nndct_resize_7"]
    resize = g.nodes[-1]
    assert [p.name for p in resize.parents] == ["nndct_conv2d_6", "nndct_shape_1", "nndct_shape_2"]
    assert g.output_keys == ["nndct_input_0", "nndct_relu_4", "nndct_maxpool_5", "nndct_conv2d_6", "nndct_resize_7"]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


def test_view_of_batch_size_and_flatten():
    x = torch.randn(2, 3, 8, 8)
    model = _Classifier().eval()
    g = capture(model, x, relu6_as_relu=False)
    assert [n.name for n in g.nodes] == [
        "nndct_input_0", "nndct_conv2d_1", "nndct_adaptive_avg_pool2d_2", "nndct_shape_3", "nndct_reshape_4",
        "nndct_dense_5", "nndct_flatten_6", "nndct_dense_7", "nndct_elemwise_add_8"]
    # the reshape joins its tensor parent's group, not the shape node's; shape outputs are never quantized
    assert [m.name for m in g.groups["nndct_reshape_4"]] == ["nndct_adaptive_avg_pool2d_2", "nndct_reshape_4"]
    assert not any("shape" in k for k in g.output_keys)
    with torch.no_grad():  # (the avg pool runs with the DPU's scale, so only the shape is compared)
        assert float_run(g, x).shape == model(x).shape


def test_size_of_a_skip_tensor():
    x = torch.randn(1, 3, 16, 16)
    model = _Skip().eval()
    g = capture(model, x, relu6_as_relu=False)
    assert [n.name for n in g.nodes] == [
        "nndct_input_0", "nndct_conv2d_1", "nndct_conv2d_2", "nndct_shape_3", "nndct_shape_4", "nndct_shape_5",
        "nndct_shape_6", "nndct_shape_7", "nndct_shape_8", "nndct_resize_9", "nndct_flatten_10",
        "nndct_reshape_11", "nndct_elemwise_add_12", "nndct_concat_13"]
    assert [n.attrs["dim"] for n in g.nodes[3:9]] == [0, 1, 2, 3, 2, 3]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))


class _MixedConvBN(nn.Module):
    """timm's MixedConv2d: the channels split, one conv per piece, concatenated, then one BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.ModuleList([nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Conv2d(2, 5, 5, padding=2)])
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()

    def forward(self, x):
        pieces = torch.split(x, [2, 2], 1)
        return self.relu(self.bn(torch.cat([c(p) for c, p in zip(self.conv, pieces, strict=True)], 1)))


def test_batchnorm_after_a_concat_of_convs_is_folded_into_each():
    # nndct's FuseBnToConv pattern [conv, concat, bn]: each conv takes its channels' slice, the BN goes
    model = _settle_bn(_MixedConvBN(), None)
    x = torch.randn(2, 4, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    assert [n.op for n in g.nodes if n.op != "strided_slice"] == ["input", "conv2d", "conv2d", "concat", "relu"]
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert [c.bias_name for c in convs] == ["_MixedConvBN::conv.0.bias", "_MixedConvBN::conv.1.bias"]
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_after_a_concat_with_a_non_conv_input_stays():
    class M(_MixedConvBN):
        def forward(self, x):
            pieces = torch.split(x, [2, 2], 1)
            return self.bn(torch.cat([self.conv[0](pieces[0]), self.conv[1](pieces[1]).relu()], 1))

    g = capture(_settle_bn(M(), None), torch.randn(1, 4, 8, 8), relu6_as_relu=False)
    assert "batch_norm" in [n.op for n in g.nodes]
    assert g.nodes[[n.op for n in g.nodes].index("conv2d")].bias_name == ""


def test_int_results_of_quantizable_ops_are_configured_but_never_quantized(tmp_path):
    # nndct configures every quantizable node's group end whatever its dtype: `h * w` of sizes (smp's MAnet)
    # is an elemwise_mul entry with a null fix position; so is an adaptive pool whose output size does not
    # divide its input's (smp's PSPNet), which nndct leaves unquantized
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.pool = nn.AdaptiveAvgPool2d(3)
            self.head = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            n, c, h, w = y.size()
            z = y.view(n, c, h * w).softmax(-1).view(n, c, h, w)
            return z + F.interpolate(self.head(self.pool(y)), size=(h, w))

    from container_payload.backends.portable import PortableBackend
    model = M().eval()
    g = capture(model, torch.randn(1, 3, 8, 8), relu6_as_relu=False)
    mul = next(n for n in g.nodes if n.op == "elemwise_mul")
    pool = next(n for n in g.nodes if n.op == "adaptive_avg_pool2d")
    assert mul.name in g.output_keys and mul.attrs["skip_quant"] and not mul.float_out
    assert pool.name in g.output_keys and pool.attrs["skip_quant"]
    b = PortableBackend(model, str(tmp_path), (3, 8, 8), quant_opt=0)
    b.calibrate([torch.randn(2, 3, 8, 8) for _ in range(2)])
    out = b.quant_info["output"]
    assert out["M::" + mul.name] == [[8, None]] and out["M::" + pool.name] == [[8, None]]
    assert all(v[0][1] is not None for k, v in out.items() if k not in ("M::" + mul.name, "M::" + pool.name))
    with torch.no_grad():
        assert b.quantized()(torch.randn(1, 3, 8, 8)).shape == (1, 4, 8, 8)


class _Eca(nn.Module):
    """timm's EcaModule: a Conv1d over the pooled channels, a sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.stem(x)
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y).sigmoid().view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


def test_conv1d_is_a_quantized_conv(tmp_path):
    # parse/op_dispatcher.py: a 3-d weight is NNDCT_OP.CONV1D, quantizable, its weight configured; seen on timm's
    # ecaresnet26t: `se.conv.weight`, `nndct_conv1d_N`, and the float mean feeding it quantized as `aten_mean_N`
    from container_payload.backends.portable import PortableBackend
    model = _Eca().eval()
    x = torch.randn(2, 3, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    conv = next(n for n in g.nodes if n.op == "conv1d")
    assert conv.weight_name == "_Eca::conv.weight" and conv.bias_name == ""
    mean = next(n for n in g.nodes if n.op == "aten::mean")
    assert conv.name in g.output_keys and mean.name in g.output_keys
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))
    b = PortableBackend(model, str(tmp_path), (3, 8, 8), quant_opt=3)
    b.calibrate([torch.randn(2, 3, 8, 8) for _ in range(2)])
    assert isinstance(b.quant_info["param"]["_Eca::conv.weight"][0][1], int)


def test_a_parameter_read_by_a_quantizable_op_is_configured_null(tmp_path):
    # parse/parser.py binds a parameter input as a free param of its node; torch_qstrategy.py configures the
    # params of quantizable nodes, and an add never quantizes it: ViT's `x + self.pos_embed` gives
    # "VisionTransformer::pos_embed": [[8, null]] (seen on a real run); an expand's (cls_token) is not configured
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.pos = nn.Parameter(torch.randn(1, 4, 8, 8))
            self.tok = nn.Parameter(torch.randn(1, 4, 1, 8))

        def forward(self, x):
            y = self.conv(x) + self.pos
            return torch.cat([self.tok.expand(y.shape[0], -1, -1, -1), y], 2)

    from container_payload.backends.portable import PortableBackend
    model = M().eval()
    g = capture(model, torch.randn(1, 3, 8, 8), relu6_as_relu=False)
    assert g.null_params == ["M::pos"]
    b = PortableBackend(model, str(tmp_path / "a"), (3, 8, 8), quant_opt=0)
    b.calibrate([torch.randn(2, 3, 8, 8)])
    assert b.quant_info["param"]["M::pos"] == [[8, None]] and "M::tok" not in b.quant_info["param"]
    again = PortableBackend(model, str(tmp_path / "b"), (3, 8, 8), quant_opt=0)
    again.load(b.quant_info, None, torch.randn(1, 3, 8, 8))  # its own quant_info.json is accepted back


class _StdConv(nn.Module):
    """timm's ScaledStdConv2d: the weight standardized with F.batch_norm(training=True), a computed gain."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.gain = nn.Parameter(torch.rand(4, 1, 1, 1) + 0.5)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, 4, -1), None, None, weight=(self.gain * 0.2).view(-1),
                         training=True, momentum=0.0, eps=1e-5).reshape_as(self.weight)
        return self.head(F.relu(F.conv2d(x, w, padding=1)))


def test_batchnorm_with_a_computed_weight_is_a_float_op_and_the_input_of_a_float_op_is_not_quantized():
    # nndct's dispatcher raises on a batch_norm whose weight is not a parameter and keeps it as `aten::batch_norm`
    # (seen on timm's nf_resnet26: aten_batch_norm_49, aten__convolution_51); an input whose only child is such a
    # float op gets no entry (nf_resnet26's quant_info.json has no nndct_input_N)
    model = _StdConv().eval()
    x = torch.randn(2, 3, 8, 8)
    g = capture(model, x, relu6_as_relu=False)
    ops = [n.op for n in g.nodes]
    assert "aten::batch_norm" in ops and "aten::_convolution" in ops and "batch_norm" not in ops
    assert "nndct_input_" + str(ops.index("input")) not in g.output_keys
    with torch.no_grad():
        torch.testing.assert_close(float_run(g, x), model(x))
