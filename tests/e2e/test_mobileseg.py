"""The model that needs fast finetune (issue 21): MobileSeg with the weights scripts/train_mobileseg.py made,
on the demo's synthetic data, loses at least 2 points of mIoU to plain post-training quantization with the
portable quantizer at the default settings, and the portable fast finetune wins back at least half of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_hostctl

sys.path.insert(0, str(ROOT / "scripts"))
import train_mobileseg  # noqa: E402

pytestmark = pytest.mark.slow


def test_committed_weights_are_a_mobileseg():
    from container_payload.models.mobileseg import BLOCKS

    assert train_mobileseg.WEIGHTS.stat().st_size < 1_000_000
    model = train_mobileseg.MobileSeg(num_classes=7)
    model.load_state_dict(torch.load(train_mobileseg.WEIGHTS, weights_only=True))  # strict: all of them, no others
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == len(BLOCKS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return train_mobileseg.make_inputs(tmp_path_factory.mktemp("mobileseg"), train_mobileseg.WEIGHTS)


def _mious(inputs: Path, out: Path, *extra: str) -> tuple[float, float]:
    proc = run_hostctl(train_mobileseg.quantize_command(inputs, "--quantizer", "portable", "--output-dir", str(out),
                                                        "--analyze-samples", "0", "--json", *extra))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["float"]["miou"], metrics["quantized"]["miou"]


@pytest.fixture(scope="module")
def plain(inputs, tmp_path_factory) -> tuple[float, float]:
    return _mious(inputs, tmp_path_factory.mktemp("plain") / "portable")


def test_plain_quantization_loses_at_least_2_points(plain):
    float_miou, quant_miou = plain
    assert float_miou > 0.85, "the float model is a working segmenter"
    assert float_miou - quant_miou >= 0.02, (float_miou, quant_miou)


def test_fast_finetune_wins_back_at_least_half_of_it(inputs, plain, tmp_path):
    float_miou, plain_miou = plain
    same_float, tuned_miou = _mious(inputs, tmp_path / "finetuned", "--fast-finetune")
    assert same_float == float_miou
    assert tuned_miou - plain_miou >= 0.5 * (float_miou - plain_miou), (float_miou, plain_miou, tuned_miou)


def test_training_is_deterministic(tmp_path):
    dataset = train_mobileseg.make_dataset(tmp_path)
    recipe = train_mobileseg.Recipe(steps=6)
    first, second = (train_mobileseg.train(dataset, recipe, log=lambda line: None).state_dict() for _ in range(2))
    assert all(torch.equal(value, second[name]) for name, value in first.items())
