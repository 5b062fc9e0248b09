"""The smaller things a new user ran into in the first hour (issue 23): each says what it does or how to fix it."""

from __future__ import annotations

import json

import pytest
import typer.main
from helpers import TINY_SIZE, TINY_UNET_ARGS, hostctl_inprocess, tiny_args

from hostctl.cli import app
from hostctl.config import load_default_map
from hostctl.errors import InputError
from hostctl.options import DOCKER_ONLY, QuantizeOptions
from hostctl.prepare import PrepareOptions, prepare
from hostctl.synthetic import write_dataset
from hostctl.ui import Reporter


def test_num_classes_help_is_not_only_for_the_builtin_unet():
    command = typer.main.get_command(app).commands["quantize"]  # type: ignore[attr-defined]
    help_text = next(p.help for p in command.params if p.name == "num_classes")
    assert "custom model" in help_text


def test_prepare_says_when_it_resizes(tmp_path, capsys):
    write_dataset(tmp_path / "data", 6, 2, 40, 40, 0)  # 40x40 images, prepared at 32x32
    prepare(PrepareOptions(dataset=tmp_path / "data", output_dir=tmp_path / "inputs", input_size=TINY_SIZE,
                           num_classes=7, calib_samples=4), Reporter())
    err = capsys.readouterr().err
    assert "resized 6 of 6 images from 40x40 to 32x32" in err


def test_prepare_is_quiet_when_nothing_is_resized(tmp_path, capsys):
    write_dataset(tmp_path / "data", 6, 2, 32, 32, 0)
    prepare(PrepareOptions(dataset=tmp_path / "data", output_dir=tmp_path / "inputs", input_size=TINY_SIZE,
                           num_classes=7, calib_samples=4), Reporter())
    assert "resized" not in capsys.readouterr().err


@pytest.mark.parametrize("text", ['model-args = {width = 16, depth = 3}\n',
                                  '[quantize]\nmodel-args = {width = 16, depth = 3}\n'])
def test_model_args_as_a_table_say_how_to_write_them(tmp_path, text):
    (tmp_path / "hostctl.toml").write_text(text)
    with pytest.raises(InputError) as caught:
        load_default_map(lambda path, table, key, value: key, tmp_path)
    assert caught.value.hint == 'Write it as: model-arg = ["width=16", "depth=3"]'


def test_the_way_the_hint_says_works(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hostctl.toml").write_text('model-arg = ["width=16", "depth=3"]\n')
    code, _, err = hostctl_inprocess(["quantize", "--print-docker-cmd"], capsys)
    assert code == 0, err


def write_quant_info(path, prefix):
    path.write_text(json.dumps({"param": {f"{prefix}::conv.weight": [[8, 7]]},
                                "output": {f"{prefix}::nndct_input_0": [[8, 6]]}, "input": {}}))
    return path


def test_diff_of_two_different_models_says_they_share_nothing(tmp_path, capsys):
    a, b = write_quant_info(tmp_path / "a.json", "Unet"), write_quant_info(tmp_path / "b.json", "SegNet")
    code, _, err = hostctl_inprocess(["diff", str(a), str(b)], capsys)
    assert code == 0
    assert "share no tensor" in err
    assert "100.0%" not in err


def test_run_json_of_a_local_run_has_no_container_options():
    assert not set(DOCKER_ONLY) & set(QuantizeOptions(runtime="local").to_dict())
    assert set(DOCKER_ONLY) <= set(QuantizeOptions(runtime="docker").to_dict())


def test_the_report_names_the_model_the_quantizer_and_the_run(tmp_path, unet_inputs, capsys):
    out = tmp_path / "results"
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, out, "--quantizer", "portable"), capsys)
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert not set(DOCKER_ONLY) & set(manifest["options"])
    page = (out / "report" / "index.html").read_text()
    args = ", ".join(f"{k}={v}" for k, v in TINY_UNET_ARGS.items())
    for fact in (f"container_payload.models.unet:Unet ({args})", "quantizer: portable", manifest["run_id"],
                 str(unet_inputs.samples.resolve())):
        assert fact in page, fact
