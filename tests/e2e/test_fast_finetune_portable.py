"""--quantizer portable --fast-finetune end to end in a subprocess, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import make_inputs, run_hostctl, tiny_args, tiny_unet

pytestmark = pytest.mark.slow


def test_portable_fast_finetune_writes_its_parameters_and_reports_the_loss(tmp_path: Path):
    model = tiny_unet()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    inputs = make_inputs(tmp_path / "inputs", model, n_calib=12)
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(inputs, out, "--quantizer", "portable", "--fast-finetune", "--finetune-samples",
                                 "8", "--no-evaluate", "--analyze-samples", "0"), env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert "Fast finetuning" in proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert "fast_finetune_params.pth" in manifest["files"]
    tuned = manifest["payload"]["finetune"]
    assert tuned["samples"] == 8 and tuned["batches"] == 2
    assert [layer["node"] for layer in tuned["layers"]] and all(layer["epochs"] >= 1 for layer in tuned["layers"])
    assert tuned["final_loss"][0] <= tuned["initial_loss"][0]
    assert json.loads((out / "quant_info.json").read_text())["fast_finetuned"] is True
    params = torch.load(out / "fast_finetune_params.pth")
    info = json.loads((out / "quant_info.json").read_text())
    assert set(params) <= set(info["param"])  # by nndct's parameter names, as quant_info.json lists them
    assert not any(p.name.startswith(".fast_finetune") for p in out.iterdir())
