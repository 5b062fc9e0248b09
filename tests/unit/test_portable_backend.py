"""PortableBackend end to end on small models: quant_info.json, modal calibration, test mode, exports."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import float_run
from torch import nn

from container_payload.backends import BackendError, load
from container_payload.backends.portable import PortableBackend
from container_payload.backends.portable import fixpoint as fxp
from container_payload.backends.portable.engine import Calibrator
from container_payload.backends.portable.groups import quantization_graph as capture
from container_payload.models.unet import Unet


def _unet(seed=0):
    torch.manual_seed(seed)
    model = Unet(num_classes=3, width=4, depth=2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _batches(n=3, bs=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, 3, size, size, generator=g) for _ in range(n)]


def test_registry_resolves_the_portable_backend():
    assert load("portable") is PortableBackend


def test_quant_info_format(tmp_path):
    b = PortableBackend(_unet(), str(tmp_path), (3, 16, 16))
    b.calibrate(_batches())
    info = json.loads((tmp_path / "quant_info.json").read_text())
    assert set(info) == {"param", "output", "input", "fast_finetuned", "bias_corrected", "version", "graph_md5"}
    assert info["input"] == {} and info["fast_finetuned"] is False and info["bias_corrected"] is True
    assert info["param"]["Unet::inc.block.0.weight"][0][0] == 8
    assert "Unet::inc.block.0.bias" in info["param"]  # gained by BN folding
    assert list(info["output"])[0] == "Unet::nndct_input_0"
    for table in (info["param"], info["output"]):
        for v in table.values():
            assert len(v) == 1 and v[0][0] == 8 and isinstance(v[0][1], int) and v[0][1] <= 12


def test_two_runs_give_identical_quant_info(tmp_path):
    texts = []
    for run in ("a", "b"):
        d = tmp_path / run
        PortableBackend(_unet(), str(d), (3, 16, 16)).calibrate(_batches())
        texts.append((d / "quant_info.json").read_bytes())
    assert texts[0] == texts[1]


def test_quant_opt_zero_turns_off_equalization_and_bias_correction(tmp_path):
    b0 = PortableBackend(_unet(), str(tmp_path / "0"), (3, 16, 16), quant_opt=0)
    b0.calibrate(_batches())
    b3 = PortableBackend(_unet(), str(tmp_path / "3"), (3, 16, 16), quant_opt=3)
    b3.calibrate(_batches())
    assert b0.quant_info["bias_corrected"] is False and b3.quant_info["bias_corrected"] is True
    x = _batches(1)[0]
    y0, y3 = b0.quantized()(x), b3.quantized()(x)
    assert y0.shape == y3.shape == (2, 3, 16, 16)
    assert not torch.equal(y0, y3)


def test_calibration_quantizes_each_batch_with_the_mode_so_far():
    g = capture(nn.Sequential(nn.Conv2d(1, 1, 1)), torch.randn(1, 1, 2, 2), relu6_as_relu=False)
    cal = Calibrator(g, bias_correction=False)
    inp = g.nodes[0]
    # overflow-free positions 5 and 4; 0.09 lands on a different grid value at fix positions 3, 4 and 5
    at = {5: torch.tensor([3.9, -3.0, 0.09]), 4: torch.tensor([7.9, -7.0, 0.09])}
    assert fxp.overflow_free_fp(-3.0, 3.9) == 5 and fxp.overflow_free_fp(-7.0, 7.9) == 4
    # history [5], [5,4], [5,4,5], [5,4,5,4], [5,4,5,4,4] -> modes 5, 4 (tie: smallest), 5, 4, 4
    for fp, mode in ((5, 5), (4, 4), (5, 5), (4, 4), (4, 4)):
        out = cal.quant(inp, at[fp].clone(), None)
        assert torch.equal(out, fxp.quantize_act(at[fp], mode))
        assert not torch.equal(out, fxp.quantize_act(at[fp], 9 - mode))
    assert cal.fix_positions()["output"]["nndct_input_0"] == 4


def test_a_settled_mode_quantizes_inside_the_diffs_pass_with_the_same_result():
    g = capture(nn.Sequential(nn.Conv2d(1, 1, 1)), torch.randn(1, 1, 2, 2), relu6_as_relu=False)
    conv = g.nodes[-1]
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(1, 1, 300, 300, generator=gen) * s for s in (1.0, 1.0, 1.0, 9.0, 1.0)]
    settled, fresh = Calibrator(g, bias_correction=False), Calibrator(g, bias_correction=False)
    for k, x in enumerate(batches):
        mode_before = fxp.settled_mode(settled.history[conv.name])
        assert (mode_before is None) == (k < 2)  # [fp], then [fp, fp] settles it
        a = settled.quant(conv, x.clone(), torch.relu_)
        # the same batch the long way: activation, diffs, then a separate quantization at the mode
        hist = fresh.history[conv.name]
        y = torch.relu(x)
        hist.append(fxp.capped(fxp.diffs_fix_pos(y)))
        assert torch.equal(a, fxp.quantize_act(y, fxp.modal_fp(hist)))
    assert settled.history == fresh.history


def test_an_announced_batch_count_stops_the_search_once_no_batch_left_can_move_a_mode(tmp_path, monkeypatch):
    # 12 batches, mostly alike: the modes lock long before the end; the result must be that of the full search
    batches = _batches(12, seed=5)
    searched = []
    real = fxp.diffs_fix_pos

    def counting(*args, **kwargs):
        searched.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fxp, "diffs_fix_pos", counting)
    full = PortableBackend(_unet(), str(tmp_path / "full"), (3, 16, 16))
    full.calibrate(iter(batches))
    searches_full = len(searched)
    searched.clear()
    counted = PortableBackend(_unet(), str(tmp_path / "counted"), (3, 16, 16))
    counted.calibrate(iter(batches), count=len(batches))
    assert len(searched) < searches_full * 0.75  # the search stopped early for most tensors
    info = [(tmp_path / run / "quant_info.json").read_bytes() for run in ("full", "counted")]
    assert info[0] == info[1]
    assert torch.equal(full.quantized()(batches[0]), counted.quantized()(batches[0]))


def test_more_batches_than_announced_is_an_error(tmp_path):
    with pytest.raises(BackendError, match="more than the 2 batches announced"):
        PortableBackend(_unet(), str(tmp_path), (3, 16, 16)).calibrate(iter(_batches(3)), count=2)


def test_test_mode_output_is_on_the_dpu_grid(tmp_path):
    b = PortableBackend(_unet(), str(tmp_path), (3, 16, 16))
    b.calibrate(_batches())
    fp = b.quant_info["output"][f"Unet::nndct_conv2d_{len(b._graph.nodes) - 1}"][0][1]
    y = b.quantized()(_batches(1, seed=5)[0]) * 2.0 ** fp
    assert torch.equal(y, torch.round(y)) and y.min() >= -128 and y.max() <= 127
    with torch.no_grad():
        f = _unet()(_batches(1, seed=5)[0])
    assert ((y * 2.0 ** -fp - f).norm() / f.norm()) < 0.2


def test_batched_test_mode_equals_one_sample_at_a_time(tmp_path):
    b = PortableBackend(_unet(), str(tmp_path), (3, 16, 16))
    b.calibrate(_batches())
    q = b.quantized()
    x = _batches(1, bs=3, seed=9)[0]
    assert torch.equal(q(x), torch.cat([q(x[i:i + 1]) for i in range(3)]))


class AllOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu6 = nn.ReLU6()
        self.leaky = nn.LeakyReLU(0.1)
        self.mp = nn.MaxPool2d(2)
        self.ap = nn.AvgPool2d(3, stride=1, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.tconv = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)
        self.flat = nn.Flatten()

    def forward(self, x):
        x = self.relu6(self.bn(self.conv(x)))
        a = self.leaky(self.ap(self.mp(x)))
        b = F.interpolate(self.mp(self.mp(x)), scale_factor=2.0, mode="bilinear", align_corners=False)
        c = torch.cat([self.up(a), self.tconv(b)], dim=1)
        d = c + torch.relu(c)
        return self.fc(self.flat(self.gap(d))).reshape(-1, 5)


def test_every_supported_op_quantizes_without_warnings(tmp_path):
    warnings = []
    model = AllOps().eval()
    b = PortableBackend(model, str(tmp_path), (3, 16, 16), warn=warnings.append)
    b.calibrate(_batches())
    assert warnings == []
    ops = {n.op for n in b._graph.nodes}
    assert {"conv2d", "relu", "leaky_relu", "maxpool", "avgpool", "resize", "conv_transpose_2d", "concat",
            "elemwise_add", "adaptive_avg_pool2d", "flatten", "dense", "reshape"} <= ops
    assert b.quantized()(_batches(1)[0]).shape == (2, 5)


def test_leaky_relu_runs_with_the_dpu_slope():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.LeakyReLU(0.1)).eval()
    x = torch.randn(2, 3, 4, 4)
    g = capture(model, x, relu6_as_relu=False)
    y = float_run(g, x)
    with torch.no_grad():
        torch.testing.assert_close(y, F.leaky_relu(model[0](x), 26 / 256))


def test_unsupported_op_warns_and_runs_in_float(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return torch.sigmoid(torch.erf(self.conv(x)))

    warnings = []
    b = PortableBackend(Odd().eval(), str(tmp_path), (3, 8, 8), warn=warnings.append)
    b.calibrate(_batches(size=8))
    assert len(warnings) == 1 and "aten_erf_2 (aten::erf)" in warnings[0] and "float" in warnings[0]
    y = b.quantized()(_batches(1, size=8)[0])
    assert ((y > 0) & (y < 1)).all()


def test_quantized_before_calibrate_is_an_error(tmp_path):
    with pytest.raises(BackendError):
        PortableBackend(_unet(), str(tmp_path), (3, 16, 16)).quantized()


def test_torchscript_export_reproduces_test_mode(tmp_path):
    b = PortableBackend(_unet(), str(tmp_path), (3, 16, 16))
    b.calibrate(_batches())
    x = _batches(1, bs=1, seed=3)[0]
    names = b.export(["torchscript"], x)
    assert names == ["Unet_portable_int8.pt"]
    loaded = torch.jit.load(os.path.join(str(tmp_path), names[0]))
    assert torch.equal(loaded(x), b.quantized()(x))
    with pytest.raises(BackendError, match="cannot export"):
        b.export(["xmodel"], x)


def test_quant_info_diff_compares_tensor_by_tensor(tmp_path):
    from hostctl.quantinfo_diff import QuantInfoError, diff, diff_files

    b = PortableBackend(_unet(), str(tmp_path / "a"), (3, 16, 16))
    b.calibrate(_batches())
    path = tmp_path / "a" / "quant_info.json"
    assert diff_files(path, path).identical
    other = json.loads(path.read_text())
    name = next(iter(other["param"]))
    other["param"][name] = [[8, other["param"][name][0][1] + 1]]
    del other["output"]["Unet::nndct_input_0"]
    other["version"] = "3.5.0"
    d = diff(json.loads(path.read_text()), other)
    assert not d.identical
    assert [m.name for m in d.param_mismatches] == [name]
    assert d.sections["output"].only_a == ("Unet::nndct_input_0",) and d.output_match_ratio == 1.0
    assert d.metadata["version"][1] == "3.5.0"
    assert json.dumps(d.to_dict())
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(QuantInfoError):
        diff_files(path, tmp_path / "bad.json")


class _Attention(nn.Module):
    """timm's attention in small: q, k, v = qkv.unbind(0)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 12, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.proj(x).reshape(b, 3, 4, h * w).permute(1, 0, 3, 2)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(b, 4, h, w)


def _attention():
    torch.manual_seed(0)
    return _Attention().eval()


def test_each_tensor_of_an_unbind_is_quantized_under_the_node_name(tmp_path):
    b = PortableBackend(_attention(), str(tmp_path / "calib"), (3, 4, 4), quant_opt=0)
    b.calibrate(_batches(size=4), count=3)
    entries = {k: v for k, v in b.quant_info["output"].items() if "unbind" in k}
    assert len(entries) == 1
    (parts,) = entries.values()
    assert len(parts) == 3 and all(bits == 8 and isinstance(fp, int) for bits, fp in parts)
    x = _batches(1, size=4, seed=9)[0]
    y = b.quantized()(x)
    # q, k and v are quantized in test mode: with them left float the output differs
    unquantized = dict(b.quantized().out_fp)
    for i in range(3):
        b.quantized().out_fp[f"aten_unbind_8:{i}"] = 30
    assert not torch.equal(b.quantized()(x), y)
    b.quantized().out_fp.update(unquantized)
    # nndct's test mode reads them back: load() takes the three entries under the one name
    again = PortableBackend(_attention(), str(tmp_path / "load"), (3, 4, 4), quant_opt=0)
    again.load(b.quant_info, None, x)
    assert torch.equal(again.quantized()(x), y)


class _AffineFalse(nn.Module):
    """The first version of the golden suite's EdgeCases: BatchNorm2d(affine=False) after a conv and after an add,
    and a conv read by a BatchNorm and by an add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.rows = nn.Conv1d(16, 16, 3, padding=1, bias=True)
        self.rows_act = nn.ReLU()
        self.plain = nn.Conv2d(16, 16, 3, padding=1, bias=True)
        self.plain_bn = nn.BatchNorm2d(16, affine=False)
        self.after_add_bn = nn.BatchNorm2d(16, affine=False)
        self.shared = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.shared_bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        x = self.stem(x)
        r = self.rows_act(self.rows(x.mean(dim=3)))
        x = x * torch.sigmoid(r).unsqueeze(3)
        y = self.after_add_bn(self.plain_bn(self.plain(x)) + x)
        c = self.shared(y)
        z = self.act(self.shared_bn(c) + c)
        return F.interpolate(self.head(z), scale_factor=2.0, mode="bilinear", align_corners=False)


def test_batchnorm_without_affine_is_configured_as_nndct_configures_it(tmp_path):
    # nndct swaps each BatchNorm(affine=False) for an affine one in training mode before tracing, so its graph
    # counts num_batches_tracked: a const and an integer add per BatchNorm. The names below are those of the
    # real vai_q_pytorch 3.5's quant_info.json for this model (scripts/make_golden.py's worker, 2026-11-27).
    torch.manual_seed(0)
    model = _AffineFalse().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    warnings = []
    b = PortableBackend(model, str(tmp_path), (3, 16, 16), warn=warnings.append)
    b.calibrate(_batches(size=16), count=3)
    params = {k.split("::")[1]: v[0][1] for k, v in b.quant_info["param"].items()}
    outputs = {k.split("::")[1]: v[0][1] for k, v in b.quant_info["output"].items()}
    assert set(params) == {
        "stem.0.weight", "stem.0.bias", "rows.weight", "rows.bias", "plain.weight", "plain.bias",
        "plain_bn.num_batches_tracked", "after_add_bn.num_batches_tracked", "after_add_bn.weight",
        "after_add_bn.bias", "shared.weight", "shared.bias", "head.weight", "head.bias"}
    assert set(outputs) == {
        "nndct_input_2", "nndct_relu_4", "nndct_relu_7", "nndct_elemwise_mul_10", "nndct_conv2d_11",
        "nndct_elemwise_add_12", "nndct_elemwise_add_13", "nndct_elemwise_add_14", "nndct_batch_norm_15",
        "nndct_conv2d_16", "nndct_relu_18", "nndct_conv2d_19", "nndct_resize_20", "aten_mean_5",
        "nndct_sigmoid_8"}
    # the batch counters are integers: configured, never quantized
    assert params["plain_bn.num_batches_tracked"] is None and outputs["nndct_elemwise_add_12"] is None
    assert isinstance(params["after_add_bn.weight"], int)
    # the user's model is left as it was: its own modules, statistics and counters
    assert not model.plain_bn.affine and not model.after_add_bn.affine
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any("after_add_bn has affine=False" in w for w in warnings)
    assert any("shared_bn is folded into conv shared" in w for w in warnings)


def test_a_batchnorm_is_folded_into_a_conv_read_elsewhere_too_and_the_readers_get_its_output(tmp_path):
    # nndct's ConvBnHandler folds [conv, bn] without looking at the conv's other readers; they then read the
    # normalised output (the generated module of the real vai_q_pytorch: add(conv_16, conv_16))
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            c = self.conv(x)
            return self.bn(c) + c

    torch.manual_seed(0)
    model = Shared().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    warnings = []
    b = PortableBackend(model, str(tmp_path), (3, 8, 8), quant_opt=0, warn=warnings.append)
    b.calibrate(_batches(size=8), count=3)
    assert [k.split("::")[1] for k in b.quant_info["param"]] == ["conv.weight", "conv.bias"]
    x = _batches(1, size=8, seed=5)[0]
    with torch.no_grad():
        both_normalised = model.bn(model.conv(x)) * 2
    y = b.quantized()(x)
    # on the DPU grid, and close to bn(c) + bn(c), not to the float model's bn(c) + c
    assert (y - both_normalised).abs().max() < 0.5 < (y - model(x)).abs().max()
    assert len(warnings) == 1 and "folded into conv conv" in warnings[0]


def test_a_conv1d_bias_is_corrected_by_one_value_for_every_channel(tmp_path):
    # pytorch_nndct/nn/modules/conv1d.py averages the error over dims [0, 1, 2] (conv.py: [0, 2, 3]), so every
    # channel's bias moves by the same amount; the golden suite's custom_edge_cases checks the values against nndct
    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.rows = nn.Conv1d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.rows(torch.relu(self.stem(x)).mean(dim=3))

    torch.manual_seed(0)
    model = Rows().eval()
    b = PortableBackend(model, str(tmp_path), (3, 16, 16), warn=lambda m: None)
    b.calibrate(_batches(6, size=16), count=6)
    fp = b.quant_info["param"]["Rows::rows.bias"][0][1]
    bias = model.rows.bias.detach()
    # bias_corr.pth holds float bias - corrected bias, and the corrected bias is the quantized one minus the
    # corrections
    corr = torch.tensor(b.bias_corr[next(k for k in b.bias_corr if "conv1d" in k)])
    moved = corr - (bias - fxp.quantize_param(bias, fp))
    assert moved.abs().max() > 0  # the correction ran
    assert torch.allclose(moved, moved.mean().expand_as(moved), atol=1e-6)
    stem_bias = model.stem.bias.detach()
    stem = torch.tensor(b.bias_corr[next(k for k in b.bias_corr if "conv2d" in k)]) - (
        stem_bias - fxp.quantize_param(stem_bias, b.quant_info["param"]["Rows::stem.bias"][0][1]))
    assert stem.std() > 1e-6  # a conv2d's corrections differ per channel


class _Maxes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.conv(x)
        m = torch.max(y, dim=1, keepdim=True)[0]
        g = self.fc(torch.flatten(self.pool(y), 1)).view(-1, 4, 1, 1)
        return (y + m) * g


def test_ops_with_several_outputs_are_configured_as_nndct_configures_them(tmp_path):
    # as the real vai_q_pytorch 3.5 wrote them (golden custom_more_ops): max along a dim has an entry per output,
    # its values quantized and its indices null; a float custom op with several outputs has one entry, for its
    # first output, quantized when an op that quantizes reads it
    torch.manual_seed(0)
    b = PortableBackend(_Maxes().eval(), str(tmp_path / "calib"), (3, 8, 8), quant_opt=0, warn=lambda m: None)
    b.calibrate(_batches(size=8), count=3)
    out = {k.split("::")[1]: v for k, v in b.quant_info["output"].items()}
    (maxed,) = [v for k, v in out.items() if k.startswith("nndct_max_")]
    (pooled,) = [v for k, v in out.items() if k.startswith("aten_adaptive_max_pool2d_")]
    assert len(maxed) == 2 and isinstance(maxed[0][1], int) and maxed[1][1] is None
    assert len(pooled) == 1 and isinstance(pooled[0][1], int)
    x = _batches(1, size=8, seed=4)[0]
    y = b.quantized()(x)
    # the max's values are quantized in test mode: left float, the output differs
    key = next(k for k in b.quantized().out_fp if k.startswith("nndct_max_") and k.endswith(":0"))
    saved = b.quantized().out_fp[key]
    b.quantized().out_fp[key] = 30
    assert not torch.equal(b.quantized()(x), y)
    b.quantized().out_fp[key] = saved
    # and test mode from the quant_info.json alone gives the same output
    torch.manual_seed(0)
    again = PortableBackend(_Maxes().eval(), str(tmp_path / "load"), (3, 8, 8), quant_opt=0)
    again.load(b.quant_info, None, x)
    assert torch.equal(again.quantized()(x), y)


def test_a_tensor_holding_inf_is_left_unquantized_with_a_null_entry_and_a_warning(tmp_path):
    # vai_q_pytorch skips a tensor with an inf or a nan (is_valid_tensor_for_quantizer) and adds nothing to its
    # history; timm's EdgeNeXt and XCiT make them (a positional-encoding const quantized to 0, then divided by)
    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return torch.sigmoid(y / (y * 0.0))  # 0/0 and x/0: nan and inf

    torch.manual_seed(0)
    warnings = []
    b = PortableBackend(Inf().eval(), str(tmp_path), (3, 8, 8), quant_opt=0, warn=warnings.append)
    b.calibrate(_batches(size=8), count=3)
    out = {k.split("::")[1]: v[0][1] for k, v in b.quant_info["output"].items()}
    (div,) = [k for k in out if "div" in k]
    assert out[div] is None and isinstance(out[next(k for k in out if "conv2d" in k)], int)
    assert any("inf or nan" in w and div in w for w in warnings)
    y = b.quantized()(_batches(1, size=8, seed=3)[0])
    assert torch.isnan(y).any()  # as nndct's own output is


def test_multihead_attention_params_are_named_after_the_tensors_the_op_reads(tmp_path):
    # nndct names a param after its state_dict key (torchvision's ViT: `self_attention.in_proj_weight`), not
    # `<module>.weight`; the golden sweep's tv_vit_b_16 showed it
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, stride=4)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            return self.attn(t, t, t, need_weights=False)[0]

    torch.manual_seed(0)
    b = PortableBackend(Attn().eval(), str(tmp_path), (3, 8, 8), quant_opt=0, warn=lambda m: None)
    b.calibrate(_batches(size=8), count=3)
    params = {k.split("::")[1] for k in b.quant_info["param"]}
    assert {"attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"} <= params
    assert not any(k.endswith("attn.weight") for k in params)
