"""The portable fast finetune (container_payload/backends/portable/finetune.py): nndct's AdaQuant on the portable
engine. Real torch models, real calibration; what it must show: the net loss goes down and never up, parameters
stay on their grids, the fix positions found before finetuning are the ones the calibration keeps, the same inputs
give the same parameters, and its disk cache is gone afterwards."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from helpers import USER_MODELS

from container_payload.backends.portable import PortableBackend
from container_payload.backends.portable import finetune as ft
from container_payload.backends.portable.groups import quantization_graph


@pytest.fixture(scope="module")
def bad_model() -> torch.nn.Module:
    sys.path.insert(0, str(USER_MODELS))
    try:
        from badchannel import BadChannel
    finally:
        sys.path.remove(str(USER_MODELS))
    torch.manual_seed(0)
    model = BadChannel(scale=40.0).eval()
    with torch.no_grad():  # trained-looking BN statistics, so that folding does something
        bn = model.stem[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def _batches(n: int = 24, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 16, 16, generator=g) for _ in range(n)]


def _finetuned(model: torch.nn.Module, tmp_path, xs):
    backend = PortableBackend(model, str(tmp_path), (3, 16, 16), quant_opt=3, warn=lambda m: None)
    seen = []
    backend.fast_finetune(lambda: iter(xs), len(xs), lambda stage, done, total: seen.append((stage, done, total)))
    return backend, seen


def test_pairs_each_conv_with_the_activation_that_alone_follows_it(bad_model):
    g = quantization_graph(bad_model, torch.randn(1, 3, 16, 16), relu6_as_relu=True)
    layers = ft.finetune_layers(g)
    assert [layer.node.op for layer in layers] == ["conv2d"] * 4
    # stem conv -> relu and mid conv -> relu pair; bad (leaky relu follows) and head keep their own outputs
    assert [layer.act.op if layer.act else None for layer in layers] == ["relu", None, "relu", None]


def test_finetune_lowers_the_net_loss_and_keeps_parameters_on_their_grids(bad_model, tmp_path):
    xs = _batches()
    backend, seen = _finetuned(bad_model, tmp_path, xs)
    report = backend.finetune_report
    # AdaQuant needs batches: with 24 of them the net loss drops by about a fifth (0.0189 -> 0.0149 when written)
    assert report["final_loss"][0] < 0.9 * report["initial_loss"][0]
    assert sum(layer["improved"] for layer in report["layers"]) >= 1
    # the losses the layers leave never rise (a worse epoch is undone)
    losses = [report["initial_loss"][0]] + [layer["loss"][0] for layer in report["layers"]]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:], strict=False))
    # progress: a start at 0, then one step per layer
    assert seen[0][1:] == (0, 4) and [s[1] for s in seen[1:]] == [1, 2, 3, 4]
    fps = backend._kept_fps["param"]
    for name, value in backend.finetuned_params.items():
        scaled = value * 2.0 ** fps[name]
        assert torch.equal(scaled, torch.round(scaled)), name
        assert scaled.abs().max() <= 128
    # the finetuned parameters differ from the plain quantized ones somewhere
    g = quantization_graph(bad_model, xs[0][:1], relu6_as_relu=True)
    from container_payload.backends.portable import fixpoint as fxp
    from container_payload.backends.portable.equalize import equalize

    equalize(g)
    plain = {n.weight_name: fxp.quantize_param(n.weight, fps[n.weight_name]) for n in g.nodes if n.weight_name}
    assert any(not torch.equal(plain[k], backend.finetuned_params[k]) for k in plain)
    assert not os.path.exists(tmp_path / ".fast_finetune_cache")


def test_calibration_after_finetune_keeps_the_fix_positions_and_quantizes_better(bad_model, tmp_path):
    xs = _batches()
    backend, _ = _finetuned(bad_model, tmp_path / "ft", xs)
    kept = {k: v for k, v in backend._kept_fps["output"].items()}
    backend.calibrate(iter(xs), count=len(xs))
    assert backend.quant_info["fast_finetuned"] is True
    # export-time adjustments may lower an output's position; none is searched afresh
    for key, entries in backend.quant_info["output"].items():
        name = key.split("::", 1)[-1]
        if kept.get(name) is not None and entries[0][1] is not None:
            assert entries[0][1] <= kept[name], key
    plain = PortableBackend(bad_model, str(tmp_path / "plain"), (3, 16, 16), quant_opt=3, warn=lambda m: None)
    plain.calibrate(iter(xs), count=len(xs))
    test = _batches(3, seed=7)
    with torch.no_grad():
        ref = [bad_model(x) for x in test]
        err_ft = sum(float(((backend.quantized()(x) - r) ** 2).mean()) for x, r in zip(test, ref, strict=True))
        err_plain = sum(float(((plain.quantized()(x) - r) ** 2).mean()) for x, r in zip(test, ref, strict=True))
    assert err_ft < err_plain


def test_same_inputs_give_the_same_parameters(bad_model, tmp_path):
    xs = _batches(4)
    a, _ = _finetuned(bad_model, tmp_path / "a", xs)
    b, _ = _finetuned(bad_model, tmp_path / "b", xs)
    assert a.finetuned_params.keys() == b.finetuned_params.keys()
    assert all(torch.equal(a.finetuned_params[k], b.finetuned_params[k]) for k in a.finetuned_params)
    saved = torch.load(tmp_path / "a" / "fast_finetune_params.pth")
    assert all(torch.equal(saved[k], a.finetuned_params[k]) for k in saved)


def test_a_cache_that_cannot_fit_is_refused_before_any_layer(bad_model, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ft.shutil, "disk_usage", lambda path: usage(10 ** 6, 10 ** 6 - 1000, 1000))
    backend = PortableBackend(bad_model, str(tmp_path), (3, 16, 16), quant_opt=3, warn=lambda m: None)
    from container_payload.backends import BackendError

    with pytest.raises(BackendError, match="--finetune-samples"):
        backend.fast_finetune(lambda: iter(_batches(2)), 2)
    assert not os.path.exists(tmp_path / ".fast_finetune_cache")


def test_loss_comparison_is_nndcts_average_meter():
    a, b = ft.Loss([1.0, 2.0]), ft.Loss([1.0, 3.0])
    assert a.better_than(b) and not b.better_than(a) and not a.better_than(ft.Loss([1.0, 2.0]))
    assert not ft.Loss([0.5, 2.5]).better_than(ft.Loss([1.0, 2.0]))  # one output worse: not better
    assert math.isclose(a.ratio_gain(b), 10000 / 3)
