"""--quantizer hybrid in process, against the fake pytorch_nndct (which reloads quant_info.json and bias_corr.pth in
test mode as the real one does, with the portable arithmetic)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from helpers import FAKE_NNDCT, TINY_SIZE, tiny_unet

from container_payload import backends
from container_payload.backends.hybrid import MIN_ARGMAX_AGREEMENT, HybridBackend


@pytest.fixture
def fake_nndct(monkeypatch):
    """The fake importable in this process, and gone again afterwards (auto-detection must not see it later)."""
    monkeypatch.syspath_prepend(str(FAKE_NNDCT))
    yield
    for name in [m for m in sys.modules if m == "pytorch_nndct" or m.startswith("pytorch_nndct.")]:
        del sys.modules[name]


def batches(n: int = 3, batch: int = 2, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *TINY_SIZE), generator=g) for _ in range(n)]


def calibrated(tmp_path, quant_opt: int = 3) -> tuple[HybridBackend, list[torch.Tensor], list[np.ndarray]]:
    backend = HybridBackend(tiny_unet(), str(tmp_path), TINY_SIZE, quant_opt=quant_opt, warn=lambda m: None)
    backend.calibrate(iter(batches()))
    samples = [b[:1] for b in batches(2, seed=2)]
    expected = [backend.quantized()(s).numpy() for s in samples]
    return backend, samples, expected


@pytest.mark.parametrize("importable,picked", [(True, "hybrid"), (False, "portable")])
def test_auto_picks_hybrid_where_nndct_imports_else_portable(monkeypatch, importable, picked):
    monkeypatch.setattr(backends, "vai_available", lambda: importable)
    warnings: list[str] = []
    assert backends.resolve("auto", warnings.append) == picked
    assert bool(warnings) is (picked == "portable")
    assert backends.resolve("vai", warnings.append) == "vai"  # the tutorial's flow stays available as it was


def test_hybrid_writes_what_nndct_test_mode_reloads_and_exports_from_the_checked_model(tmp_path, fake_nndct):
    backend, samples, expected = calibrated(tmp_path)
    info = json.loads((tmp_path / "quant_info.json").read_text())
    assert "graph_md5" not in info, "a hash that is not nndct's would make its test mode refuse the file"
    assert info["bias_corrected"] is True
    corr = torch.load(tmp_path / "bias_corr.pth")
    assert corr and all(k.startswith("Unet::nndct_conv") for k in corr)
    assert all(v is None or isinstance(v, list) for v in corr.values())
    check = backend.check(samples, expected)
    assert check.passed and check.samples == 2 and check.max_abs_diff == 0.0 and check.argmax_agreement == 1.0
    assert backend.export(["xmodel"], samples[0]) == ["Unet_int.xmodel", "Unet.py"]


def test_quant_opt_zero_writes_no_bias_corr_and_still_checks(tmp_path, fake_nndct, monkeypatch):
    from pytorch_nndct import OPTIONS

    monkeypatch.setitem(OPTIONS, "nndct_quant_opt", "0")
    backend, samples, expected = calibrated(tmp_path, quant_opt=0)
    assert not (tmp_path / "bias_corr.pth").exists()
    assert backend.check(samples, expected).passed


def test_tolerance_is_argmax_on_999_per_mille_of_pixels(tmp_path, fake_nndct):
    backend, samples, expected = calibrated(tmp_path)
    nudged = [e.copy() for e in expected]
    nudged[0][0, :, 0, 0] += 1e-3  # one pixel's logits move together: values differ, the class does not
    check = backend.check(samples, nudged)
    assert check.passed and check.max_abs_diff == pytest.approx(1e-3, rel=1e-2) and check.argmax_agreement == 1.0
    flipped = [np.roll(e, 1, axis=1) for e in expected]
    check = backend.check(samples, flipped)
    assert not check.passed and check.argmax_agreement < MIN_ARGMAX_AGREEMENT and "differ" in check.reason
    with pytest.raises(backends.BackendError):
        HybridBackend(tiny_unet(), str(tmp_path), TINY_SIZE).export(["xmodel"], samples[0])


def _edit_info(tmp_path, edit) -> None:
    path = tmp_path / "quant_info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


@pytest.mark.parametrize("edit", [
    lambda info: info["output"].update({"Unet::nndct_renamed_99": info["output"].pop("Unet::nndct_input_0")}),
    lambda info: info["param"].pop(next(iter(info["param"]))),
    lambda info: info.update(graph_md5="0" * 32),
], ids=["renamed-output", "missing-param", "foreign-graph-md5"])
def test_nndct_refusing_the_files_fails_the_check(tmp_path, fake_nndct, capfd, edit):
    backend, samples, expected = calibrated(tmp_path)
    _edit_info(tmp_path, edit)
    check = backend.check(samples, expected)
    assert not check.passed and check.samples == 0 and "exited with status 0" in check.reason
    assert "Node name mismatch" in capfd.readouterr().err


def test_fake_nndct_test_mode_needs_bias_corr_and_exports_only_at_batch_1(tmp_path, fake_nndct, capfd):
    from pytorch_nndct.apis import torch_quantizer

    calibrated(tmp_path)
    unet = tiny_unet().eval()
    batched = torch_quantizer("test", unet, (torch.randn(4, *TINY_SIZE),), output_dir=str(tmp_path),
                              device=torch.device("cpu"))
    batched.quant_model(torch.randn(4, *TINY_SIZE))
    batched.export_xmodel(output_dir=str(tmp_path))
    assert not (tmp_path / "Unet_int.xmodel").exists()
    assert "Batch size must be 1" in capfd.readouterr().err
    (tmp_path / "bias_corr.pth").unlink()
    with pytest.raises(SystemExit) as exc:
        torch_quantizer("test", unet, (torch.randn(1, *TINY_SIZE),), output_dir=str(tmp_path),
                        device=torch.device("cpu"))
    assert exc.value.code == 2 and "Bias correction result file does not exist" in capfd.readouterr().err
