"""hostctl quantize's layer analysis (issue 21) end to end, in a subprocess like a user runs it: the deliberately
bad conv named first in the terminal at 80 columns, layers.json with run.json's summary and the report's plot,
--analyze-samples N / 0 / negative, and the vai quantizer's one-line note."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import USER_MODELS, make_inputs, run_hostctl, tiny_args

from container_payload.job import LAYERS

pytestmark = pytest.mark.slow

sys.path.insert(0, str(USER_MODELS))
from badchannel import BadChannel  # noqa: E402 - the user model directory goes on the path first


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    torch.manual_seed(0)
    return make_inputs(tmp_path_factory.mktemp("bad") / "inputs", BadChannel().eval(), n_calib=8, n_test=6)


def _args(inputs, out: Path, *extra: str) -> list[str]:
    return tiny_args(inputs, out, "--model", "badchannel:BadChannel", "--model-path", str(USER_MODELS),
                     "--quantizer", "portable", *extra)


def _table_rows(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Tensors that cost the most"))
    return [line for line in lines[start:] if line.startswith("│")]


def test_the_bad_conv_is_named_first_and_everything_is_in_layers_json(tmp_path, bad_inputs):
    out = tmp_path / "out"
    proc = run_hostctl(_args(bad_inputs, out, "--json"), env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    rows = _table_rows(proc.stderr)
    assert len(rows) == 5 and all(len(row) <= 80 for row in rows)
    assert rows[0].split("│")[2].strip() == "bad", rows  # the module column
    tail = proc.stderr[proc.stderr.index("Tensors that cost the most"):]
    assert all(len(line) <= 80 for line in tail.splitlines()), tail
    assert "float passes" in tail and LAYERS in tail

    doc = json.loads((out / LAYERS).read_text())
    assert doc["samples"] == 6 and doc["backend"] == "portable" and doc["model"] == "BadChannel"
    info = json.loads((out / "quant_info.json").read_text())
    assert {t["name"] for t in doc["tensors"]} == set(info["param"]) | set(info["output"])
    assert next(t for t in doc["tensors"] if t["name"] == doc["worst"][0])["module"] == "bad"
    # the whole model's output SQNR agrees with the metrics, computed from the two prediction files
    metrics = json.loads((out / "metrics.json").read_text())
    assert doc["output"]["sqnr_db"] == pytest.approx(metrics["sqnr_db"], abs=0.05)

    manifest = json.loads((out / "run.json").read_text())
    assert manifest["layers"]["file"] == LAYERS and manifest["layers"]["worst"][0]["module"] == "bad"
    assert LAYERS in manifest["written"] and "report/layers_sqnr.png" in manifest["written"]
    assert "analyze" in manifest["payload"]["timings"]
    assert json.loads(proc.stdout)["layers"]["tensors"] == len(doc["tensors"])
    page = (out / "report" / "index.html").read_text()
    assert 'src="layers_sqnr.png"' in page


def test_analyze_samples_limits_the_samples_and_zero_skips_it(tmp_path, bad_inputs):
    out = tmp_path / "two"
    proc = run_hostctl(_args(bad_inputs, out, "--analyze-samples", "2", "--no-evaluate"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / LAYERS).read_text())
    assert doc["samples"] == 2 and doc["own_error"]["samples"] <= 2
    assert json.loads((out / "job.json").read_text())["analyze_samples"] == 2

    out = tmp_path / "none"
    proc = run_hostctl(_args(bad_inputs, out, "--analyze-samples", "0"))
    assert proc.returncode == 0, proc.stderr
    assert not (out / LAYERS).exists() and not (out / "report" / "layers_sqnr.png").exists()
    assert "layers" not in json.loads((out / "run.json").read_text())
    assert "Tensors that cost the most" not in proc.stderr and "layer analysis" not in proc.stderr


def test_a_negative_analyze_samples_is_exit_2_before_any_work(tmp_path, bad_inputs):
    out = tmp_path / "out"
    proc = run_hostctl(_args(bad_inputs, out, "--analyze-samples", "-1"))
    assert proc.returncode == 2
    assert "--analyze-samples" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert not out.exists()


def test_vai_says_once_that_it_has_no_analysis_and_hybrid_has_one(tmp_path, unet_inputs, fake_nndct_env):
    out = tmp_path / "vai"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate"), env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("has no layer analysis") == 1 and not (out / LAYERS).exists()
    out = tmp_path / "hybrid"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "hybrid", "--no-evaluate"), env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / LAYERS).read_text())
    assert doc["backend"] == "hybrid" and doc["samples"] == 4
    assert "has no layer analysis" not in proc.stderr
