"""What quant_opt > 0 adds, as vai_q_pytorch does it: cross-layer equalization (layer groups) and bias correction
(a bias quantized once, then corrected off the grid)."""

import torch
from helpers import float_run
from torch import nn

from container_payload.backends.portable import fixpoint as fxp
from container_payload.backends.portable.engine import CORR_RATE, Calibrator
from container_payload.backends.portable.equalize import equalize
from container_payload.backends.portable.groups import quantization_graph as capture


class _Fork(nn.Module):
    """A conv chain (stem -> relu -> mid) and two convs reading one tensor (the add's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.mid(self.act(self.stem(x)))
        y = y + x.mean(dim=1, keepdim=True)
        return self.a(y) + self.b(y)


def _weights(g):
    return {n.module_path: (n.weight.clone(), n.bias.clone()) for n in g.nodes if n.weight is not None}


def test_equalization_pairs_a_chain_but_not_two_convs_reading_one_tensor():
    torch.manual_seed(0)
    model = _Fork().eval()
    with torch.no_grad():
        model.mid.weight.mul_(torch.linspace(0.1, 3.0, 8).view(1, -1, 1, 1))  # ranges worth equalizing
    g = capture(model, torch.randn(1, 3, 8, 8), relu6_as_relu=True)
    before = _weights(g)
    # nndct's walk hands the add's consumers an empty group each and starts a new list for each of them
    # (commander.py `_collect_layer_groups_recursion`); one shared list would pair a with b
    assert equalize(g) == 1
    after = _weights(g)
    assert not torch.equal(before["stem"][0], after["stem"][0])
    assert not torch.equal(before["mid"][0], after["mid"][0])
    for sibling in ("a", "b"):
        assert torch.equal(before[sibling][0], after[sibling][0]) and torch.equal(before[sibling][1],
                                                                                   after[sibling][1])


def test_a_bias_is_quantized_once_and_its_corrections_stay_off_the_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    g = capture(model, batches[0][:1], relu6_as_relu=True)
    cal = Calibrator(g, bias_correction=True)
    conv = next(n for n in g.nodes if n.op == "conv2d")
    fp = cal.param_fp[conv.bias_name]
    b0 = cal.params(conv)[1].clone()
    assert torch.equal(b0, fxp.quantize_param(conv.bias, fp))
    cal.step(batches[0])
    b1 = cal.params(conv)[1].clone()
    # pytorch_nndct calibrate_int quantizes a parameter only while it has no fix position: the second batch
    # computes with the corrected float bias, not with it quantized again
    assert not torch.equal(b1, b0) and not torch.equal(b1, fxp.quantize_param(b1, fp))
    cal.step(batches[1])
    x = fxp.quantize_act(batches[1], cal.fix_positions()["output"]["nndct_input_0"])
    with torch.no_grad():
        ref = nn.functional.conv2d(x, conv.weight, conv.bias)
        got = nn.functional.conv2d(x, cal.qweight[conv.name], b1)
    err = (got - ref).mean(dim=(0, 2, 3))
    assert torch.allclose(cal.params(conv)[1], b1 - CORR_RATE * err, atol=1e-6)
    assert torch.equal(cal.test_biases()[conv.name], conv.bias - (conv.bias - cal.params(conv)[1]))


class _Relu6s(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.module_relu6 = nn.ReLU6()
        self.hardtanh = nn.Hardtanh(0.0, 6.0)

    def forward(self, x):
        return self.c3(self.hardtanh(self.c2(torch.nn.functional.relu6(self.c1(self.module_relu6(x))))))


def test_only_relu6_modules_become_relu_and_the_model_keeps_them():
    model = _Relu6s().eval()
    g = capture(model, torch.randn(1, 3, 4, 4), relu6_as_relu=True)
    # pytorch_nndct/qproc/utils.py replace_relu6_with_relu swaps nn.ReLU6 modules only (seen on vai_q_pytorch:
    # F.relu6 and Hardtanh(0, 6) are written nndct_relu6_N and close equalization's layer groups)
    assert [n.op for n in g.nodes if n.op.startswith("relu")] == ["relu", "relu6", "relu6"]
    assert isinstance(model.module_relu6, nn.ReLU6)
    g = capture(model, torch.randn(1, 3, 4, 4), relu6_as_relu=False)
    assert [n.op for n in g.nodes if n.op.startswith("relu")] == ["relu6", "relu6", "relu6"]


class _Deconvs(nn.Module):
    """conv -> grouped conv-transpose -> conv-transpose -> depthwise conv-transpose -> conv, relus between."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.grouped = nn.ConvTranspose2d(16, 16, 2, stride=2, groups=4)
        self.plain = nn.ConvTranspose2d(16, 8, 3, padding=1)
        self.depthwise = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.c1(x))))
        return self.c2(torch.relu(self.depthwise(torch.relu(self.plain(x)))))


def test_equalization_keeps_the_float_function_through_grouped_and_depthwise_conv_transposes():
    torch.manual_seed(0)
    model = _Deconvs().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.mul_(torch.rand(m.weight.shape[0], 1, 1, 1) * 3)
    x = torch.randn(2, 3, 8, 8)
    g = capture(model, x[:1], relu6_as_relu=True)
    before = _weights(g)
    assert equalize(g) == 4
    after = _weights(g)
    assert all(not torch.equal(before[k][0], after[k][0]) for k in before)
    with torch.no_grad():
        y = float_run(g, x)
        assert torch.allclose(y, model(x), rtol=1e-4, atol=1e-5)
