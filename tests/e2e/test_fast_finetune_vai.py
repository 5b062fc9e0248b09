"""--quantizer vai --fast-finetune through tests/fake_nndct (which follows nndct's fast_finetune/load_ft_param API
and files), end to end in a subprocess; and --finetune-samples alone, one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_SIZE, TINY_UNET_ARGS, make_inputs, run_hostctl, tiny_args, tiny_unet

pytestmark = pytest.mark.slow


def _preds(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as h5:
        return {name: h5[name][()] for name in h5}


@pytest.fixture
def biased_unet_inputs(tmp_path: Path):
    # a head bias the fake's finetune can move: a tiny random Unet's outputs are near zero
    model = tiny_unet()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return make_inputs(tmp_path / "inputs", model, n_calib=10)


def test_vai_fast_finetune_runs_nndct_finetune_and_loads_it_in_test_mode(tmp_path, biased_unet_inputs,
                                                                        fake_nndct_env):
    plain, tuned = tmp_path / "plain", tmp_path / "tuned"
    args = ("--quantizer", "vai", "--no-evaluate", "--json")
    proc = run_hostctl(tiny_args(biased_unet_inputs, plain, *args), env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    proc = run_hostctl(tiny_args(biased_unet_inputs, tuned, *args, "--fast-finetune", "--finetune-samples", "6"),
                       env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr

    manifest = json.loads((tuned / "run.json").read_text())
    assert "param.pth" in manifest["files"] and (tuned / "param.pth").is_file()
    assert "finetune" in manifest["payload"]["timings"]
    assert not (plain / "param.pth").exists()
    assert json.loads((tuned / "quant_info.json").read_text())["fast_finetuned"] is True
    assert json.loads((plain / "quant_info.json").read_text())["fast_finetuned"] is False
    log = (tuned / "run.log").read_text()
    assert "fast finetune on 6 calibration samples (2 batches of 4, seed 0)" in log
    assert "=>Exporting quant model parameters.(" in log
    # both test-mode quantizers (the batched predictions and the batch-1 export) loaded param.pth
    assert log.count("=>Loading quant model parameters.(") == 2
    assert (tuned / "Unet_int.xmodel").is_file()

    # The finetuned run's predictions are nndct's test mode with load_ft_param() on that run's files (the fake's
    # test mode refuses to run a finetuned calibration without them), and its finetune did tune a parameter.
    tuned_params = torch.load(tuned / "param.pth")
    assert not torch.equal(tuned_params["module.head.bias"], torch.load(biased_unet_inputs.state_dict)["head.bias"])
    tuned_preds = _preds(tuned / "quantization_test_preds.h5")
    script = f"""
import sys, h5py, numpy as np, torch
sys.argv.append("--nndct_quant_opt=3")
from pytorch_nndct.apis import torch_quantizer
from container_payload.models.unet import Unet
model = Unet(num_classes=3, **{TINY_UNET_ARGS!r})
model.load_state_dict(torch.load({str(biased_unet_inputs.state_dict)!r}))
model.eval()
with h5py.File({str(biased_unet_inputs.samples)!r}) as h5:
    x = torch.from_numpy(np.stack([h5["test"][n][()] for n in h5["test"]]))
q = torch_quantizer("test", model, (torch.randn(1, *{TINY_SIZE!r}),), output_dir={str(tuned)!r},
                    device=torch.device("cpu"))
if sys.argv[1] == "load":
    q.load_ft_param()
with torch.no_grad():
    np.save(sys.argv[2], q.quant_model(x).numpy())
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), fake_nndct_env["PYTHONPATH"]]))
    outputs = {}
    for mode in ("load", "skip"):
        target = tmp_path / f"{mode}.npy"
        outputs[mode] = subprocess.run([sys.executable, "-c", script, mode, str(target)], env=env,
                                       capture_output=True, text=True, timeout=300)
    assert outputs["load"].returncode == 0, outputs["load"].stderr
    expected = np.concatenate([tuned_preds[name] for name in sorted(tuned_preds)])
    np.testing.assert_array_equal(np.load(tmp_path / "load.npy"), expected)
    assert outputs["skip"].returncode == 2 and "Call load_ft_param" in outputs["skip"].stderr


def test_nndct_giving_up_for_memory_is_one_line_naming_finetune_samples(tmp_path, unet_inputs, fake_nndct_env):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate", "--export", "none",
                                 "--fast-finetune"), env={**fake_nndct_env, "FAKE_NNDCT_FAIL": "fast_finetune_memory"})
    assert proc.returncode == 1
    assert "pytorch_nndct gave up fast finetune" in proc.stderr and "--finetune-samples N" in proc.stderr
    assert not out.exists()


def test_finetune_samples_without_fast_finetune_is_exit_2(tmp_path, unet_inputs):
    proc = run_hostctl(tiny_args(unet_inputs, tmp_path / "out", "--quantizer", "portable", "--finetune-samples", "4"))
    assert proc.returncode == 2
    assert "--finetune-samples needs --fast-finetune" in proc.stderr
