"""The layer analysis (issue 21) on real small torch models: the deliberately bad conv shows up as the worst
tensor, and its numbers agree with an independent computation on the user's own nn.Module."""

import io
import json
import math
import sys

import pytest
import torch
from helpers import USER_MODELS

from container_payload.backends.portable import PortableBackend
from container_payload.backends.portable import analysis as A
from container_payload.backends.portable.analysis import LayerAnalysis, analyze, reference
from container_payload.backends.portable.engine import has_params

sys.path.insert(0, str(USER_MODELS))
from badchannel import BadChannel  # noqa: E402 - the user model directory goes on the path first
from tinyseg import TinySeg  # noqa: E402

SIZE = 32


def _data(n_batches, seed, bs=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, 3, SIZE, SIZE, generator=g) for _ in range(n_batches)]


def _run(model, tmp_path, quant_opt=3, n_test=3, own_budget=A.OWN_BUDGET):
    model = model.eval()
    b = PortableBackend(model, str(tmp_path), (3, SIZE, SIZE), quant_opt=quant_opt, warn=lambda m: None)
    b.calibrate(_data(2, 1), count=2)
    test = _data(n_test, 2)
    modules, float_params = reference(b.model, test[0], b._graph, quant_opt > 0)
    a = analyze(b._graph, b._test, test, 4 * n_test, modules, own_budget=own_budget, float_params=float_params)
    return b, test, a.result(type(model).__name__, "portable"), a


def _bad(scale=300.0):
    torch.manual_seed(0)
    return BadChannel(scale=scale)


def _sqnr(ref, out):
    ref, out = ref.double(), out.double()
    return 10 * math.log10(float((ref * ref).sum()) / float(((out - ref) ** 2).sum()))


def _quant_act(x, fp):  # the DPU's activation rounding: half up, then saturate
    return torch.clamp(torch.floor(x * 2.0 ** fp + 0.5), -128, 127) * 2.0 ** -fp


def _quant_param(x, fp):  # parameters: half away from zero
    s = x * 2.0 ** fp
    return torch.clamp(torch.sign(s) * torch.floor(s.abs() + 0.5), -128, 127) * 2.0 ** -fp


def test_the_conv_with_a_huge_range_channel_is_the_worst(tmp_path):
    _, _, doc, _ = _run(_bad(), tmp_path)
    worst = [t for t in doc["tensors"] if t["name"] == doc["worst"][0]][0]
    assert worst["module"] == "bad", doc["worst"]
    # its output and its weights both carry the huge channel: the two tensors that cost the most
    assert {t["module"] for t in doc["tensors"] if t["name"] in doc["worst"][:2]} == {"bad"}
    # the same net without the bad channel: nothing of `bad` is near the top, and the output is far better
    _, _, good, _ = _run(_bad(scale=1.0), tmp_path / "good")
    assert good["output"]["sqnr_db"] > doc["output"]["sqnr_db"] + 15
    bad_out = next(t for t in doc["tensors"] if t["module"] == "bad" and t["kind"] == "activation")
    same = next(t for t in good["tensors"] if t["name"] == bad_out["name"])
    assert bad_out["own_sqnr_db"] < same["own_sqnr_db"] - 20
    assert bad_out["fix_pos"] < same["fix_pos"] - 4  # the range of one channel sets the position for all


def test_every_tensor_of_quant_info_is_measured_under_nndct_names(tmp_path):
    b, _, doc, _ = _run(TinySeg(), tmp_path)
    info = json.loads((tmp_path / "quant_info.json").read_text())
    names = [t["name"] for t in doc["tensors"]]
    assert len(names) == len(set(names))
    assert set(names) == set(info["param"]) | set(info["output"])
    for t in doc["tensors"]:
        table = info["param"] if t["kind"] in ("weight", "bias") else info["output"]
        assert table[t["name"]] == [[t["bit_width"], t["fix_pos"]]]
        assert t["sqnr_db"] is not None and 0 <= t["clipped"] <= 1
    by_name = {t["name"]: t for t in doc["tensors"]}
    # module paths a user recognises: the ReLU module of stem, the conv of branch, the pool, a conv's weight
    assert by_name["TinySeg::nndct_relu_2"]["module"] == "stem.2"
    assert by_name["TinySeg::nndct_avgpool_6"]["module"] == "pool"
    assert by_name["TinySeg::branch.0.weight"]["module"] == "branch.0"
    # the residual add + ReLU of forward itself has no module: its line of code is given instead
    assert by_name["TinySeg::nndct_relu_5"]["module"] == ""
    assert by_name["TinySeg::nndct_relu_5"]["source"].endswith("tinyseg.py:21")
    depths = [t["depth"] for t in doc["tensors"]]
    assert depths == sorted(depths) and depths[0] == 0


def test_numbers_agree_with_an_independent_computation(tmp_path):
    """quant_opt 0 (no equalization, no bias correction): the float weights are the user's own, so the real
    nn.Module, with one tensor replaced by its quantized value, gives the own error independently."""
    model = _bad().eval()
    b, test, doc, a = _run(model, tmp_path, quant_opt=0, n_test=3)
    info = json.loads((tmp_path / "quant_info.json").read_text())
    by_name = {t["name"]: t for t in doc["tensors"]}
    own = doc["own_error"]["samples"]
    assert 1 <= own <= doc["samples"] == 12
    x_all = torch.cat(test)
    x_own = x_all[:own]
    with torch.no_grad():
        ref_all, ref_own = model(x_all), model(x_own)

    # the output: the whole quantized model (the fast test mode, another code path) against the nn.Module
    with torch.no_grad():
        q_all = b.quantized()(x_all)
    assert doc["output"]["sqnr_db"] == pytest.approx(_sqnr(ref_all, q_all), abs=0.01)
    assert by_name["BadChannel::nndct_conv2d_7"]["sqnr_db"] == pytest.approx(_sqnr(ref_all, q_all), abs=0.01)

    # a weight: its SQNR and its own error, the nn.Module running with that weight quantized
    fp = info["param"]["BadChannel::head.weight"][0][1]
    w = model.head.weight.detach().clone()
    qw = _quant_param(w, fp)
    assert by_name["BadChannel::head.weight"]["sqnr_db"] == pytest.approx(_sqnr(w, qw), abs=1e-3)
    with torch.no_grad():
        model.head.weight.copy_(qw)
        y = model(x_own)
        model.head.weight.copy_(w)
    assert by_name["BadChannel::head.weight"]["own_sqnr_db"] == pytest.approx(_sqnr(ref_own, y), abs=0.01)

    # an activation (mid's ReLU): the fraction clipped and its own error, through a hook on the module
    fp = info["output"]["BadChannel::nndct_relu_6"][0][1]
    seen = []
    hook = model.mid.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        model(x_all)
    hook.remove()
    out = seen[0]
    clipped = float(((out * 2.0 ** fp >= 127.5) | (out * 2.0 ** fp < -128.5)).double().mean())
    assert clipped > 0.01  # the bad channel made calibration pick a position too fine for the float values
    assert by_name["BadChannel::nndct_relu_6"]["clipped"] == pytest.approx(clipped, abs=1e-4)
    hook = model.mid.register_forward_hook(lambda m, i, out: _quant_act(out, fp))
    with torch.no_grad():
        y = model(x_own)
    hook.remove()
    assert by_name["BadChannel::nndct_relu_6"]["own_sqnr_db"] == pytest.approx(_sqnr(ref_own, y), abs=0.01)
    classes_changed = float((y.argmax(1) != ref_own.argmax(1)).double().mean())
    assert by_name["BadChannel::nndct_relu_6"]["own_changed"] == pytest.approx(classes_changed, abs=1e-6)
    # the ranking key is the output's mean squared error
    assert by_name["BadChannel::nndct_relu_6"]["own_noise_ms"] == pytest.approx(
        float(((y.double() - ref_own.double()) ** 2).mean()), rel=1e-3)


def test_the_test_models_shortcuts_change_no_figure(tmp_path):
    """The quantized side is the fast test-mode model (channels-last, outputs kept as integers for the convs that
    read them); the general model, without those shortcuts, gives the same SQNR for every tensor."""
    b = PortableBackend(_bad().eval(), str(tmp_path), (3, SIZE, SIZE), warn=lambda m: None)
    b.calibrate(_data(2, 1), count=2)
    assert b._test.channels_last and b._test.in_units  # the shortcuts are there to be checked
    test = _data(2, 2)
    docs = [analyze(b._graph, model, test, 8, own_budget=0.01).result("BadChannel", "portable")
            for model in (b._test, b._test.general())]
    for fast, general in zip(docs[0]["tensors"], docs[1]["tensors"], strict=True):
        assert fast["name"] == general["name"]
        assert fast["sqnr_db"] == pytest.approx(general["sqnr_db"], abs=1e-3), fast["name"]
        assert fast["clipped"] == general["clipped"]
    assert docs[0]["output"] == docs[1]["output"]


def test_the_analysis_leaves_the_quantized_model_as_it_was(tmp_path):
    """The forks share the float run's tensors and the test model is the backend's: nothing may change them."""
    b = PortableBackend(TinySeg().eval(), str(tmp_path), (3, SIZE, SIZE), warn=lambda m: None)
    b.calibrate(_data(2, 1), count=2)
    test = _data(2, 2)
    x = torch.cat(test)
    with torch.no_grad():
        before = b.quantized()(x)
    inputs = [t.clone() for t in test]
    analyze(b._graph, b._test, test, 8, own_budget=1000.0)
    with torch.no_grad():
        after = b.quantized()(x)
    assert torch.equal(before, after)
    assert all(torch.equal(a, c) for a, c in zip(test, inputs, strict=True))


def test_own_error_samples_follow_the_budget(tmp_path):
    """Own error on a prefix of the samples, sized so that the forks cost about own_budget float passes."""
    _, _, small, a_small = _run(TinySeg(), tmp_path / "a", n_test=4, own_budget=0.01)
    assert small["own_error"]["samples"] == 1  # at least one sample, whatever the budget
    _, _, big, a_big = _run(TinySeg(), tmp_path / "b", n_test=4, own_budget=1000.0)
    assert big["own_error"]["samples"] == big["samples"] == 16
    measured = [t for t in big["tensors"] if t["own_sqnr_db"] is not None]
    assert big["own_error"]["tensors"] == len(measured) == len(big["tensors"])
    assert big["own_error"]["forks"] == 4 * len(measured)  # one per tensor and batch
    assert a_big.seconds["own"] > a_small.seconds["own"]
    for doc in (small, big):
        cost = doc["cost"]
        assert cost["seconds"] > 0 and cost["float_passes"] > 0 and cost["float_pass_seconds"] > 0


def test_the_float_run_is_the_models_function(tmp_path):
    """The float side is the captured graph in float (BatchNorm folded, equalized): the user's model up to float
    rounding, so a tensor's own error is the quantization's alone."""
    model = TinySeg().eval()
    b, test, _, _ = _run(model, tmp_path)
    a = LayerAnalysis(b._graph, b._test)
    with torch.no_grad():
        got, want = a._float_forward(test[0]), model(test[0])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("quant_opt", [0, 3])
def test_the_float_reference_is_the_quantization_graphs_own_before_any_change(tmp_path, quant_opt):
    """reference() captures the model afresh (BatchNorm folded, equalized with quant_opt > 0): its parameters are
    the quantization graph's, bit for bit, as long as nothing (fast finetune) changed those."""
    b = PortableBackend(_bad().eval(), str(tmp_path), (3, SIZE, SIZE), quant_opt=quant_opt, warn=lambda m: None)
    b.calibrate(_data(1, 1), count=1)
    _, params = reference(b.model, _data(1, 2)[0], b._graph, quant_opt > 0)
    nodes = [n for n in b._graph.nodes if has_params(n)]
    assert params is not None and sorted(params) == sorted(n.name for n in nodes)
    for n in nodes:
        assert torch.equal(params[n.name][0], n.weight) and torch.equal(params[n.name][1], n.bias)


def test_changed_counts_moved_argmax_positions():
    ref = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, -1.0]]]])  # [1, 3, 1, 2]: classes 0 and 1
    cls = A.classes(ref)
    assert cls.squeeze().tolist() == [0, 1]
    moved = ref.clone()
    moved[0, 2, 0, 1] = 5.0
    assert A.changed(ref, cls) == 0 and A.changed(moved, cls) == 1
    assert A.sqnr_db(1.0, 0.0) is None and A.sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_layers_json_is_strict_json(tmp_path):
    _, _, doc, _ = _run(TinySeg(), tmp_path)
    A.write(doc, str(tmp_path / "layers.json"))
    text = (tmp_path / "layers.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["schema"] == A.SCHEMA
    out = io.StringIO()
    json.dump(doc, out, allow_nan=False)
