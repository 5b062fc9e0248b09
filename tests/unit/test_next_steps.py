"""What a user needs next is written down: the model that goes with prepared weights (and the quantize command that
uses them), the samples a run used (for evaluate), the failed run's directory, and which failed runs clean removes."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import torch
from helpers import TINY_SIZE, TINY_UNET_ARGS, hostctl_inprocess, tiny_args, tiny_unet

from hostctl.prepare import PrepareOptions, prepare
from hostctl.synthetic import write_dataset
from hostctl.ui import Reporter


def test_prepare_records_the_model_and_the_command_that_quantizes_with_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "data", 8, 4, 32, 32, 0)
    torch.save({"model": tiny_unet(num_classes=7).state_dict()}, tmp_path / "ckpt.pt")
    out = Path("inputs")
    args = ["prepare", "--dataset", "data", "--checkpoint", "ckpt.pt", "--output-dir", str(out), "--input-size",
            *map(str, TINY_SIZE), "--num-classes", "7", "--calib-samples", "4",
            *(f"--model-arg={k}={v}" for k, v in TINY_UNET_ARGS.items())]
    code, _, err = hostctl_inprocess(args, capsys)
    assert code == 0, err
    record = json.loads((out / "prepare.json").read_text())
    assert record["model"] == {"model": "container_payload.models.unet:Unet", "model_path": None,
                               "model_args": TINY_UNET_ARGS, "num_classes": 7, "input_size": list(TINY_SIZE)}
    command = record["quantize_command"]
    assert command in err  # printed too
    argv = shlex.split(command)
    assert argv[:2] == ["hostctl", "quantize"]
    code, _, err = hostctl_inprocess([*argv[1:], "--runtime", "local", "--quantizer", "portable", "--output-dir",
                                      "results", "--calib-batch-size", "2"], capsys)
    assert code == 0, err


def test_prepare_without_a_checkpoint_names_no_model(tmp_path):
    write_dataset(tmp_path / "data", 8, 4, 32, 32, 0)
    result = prepare(PrepareOptions(dataset=tmp_path / "data", output_dir=tmp_path / "inputs",
                                    input_size=TINY_SIZE, num_classes=7, calib_samples=4), Reporter(quiet=True))
    assert result.model is None
    assert json.loads((tmp_path / "inputs" / "prepare.json").read_text())["model"] is None


def test_evaluate_uses_the_samples_of_the_run_it_evaluates(tmp_path, unet_inputs, capsys, monkeypatch):
    run_dir = tmp_path / "work"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    inputs = os.path.relpath(unet_inputs.dir, run_dir)
    code, _, err = hostctl_inprocess(["quantize", "--runtime", "local", "--input-dir", inputs, "--output-dir",
                                      "results", "--input-size", *map(str, TINY_SIZE), "--num-classes", "3",
                                      *(f"--model-arg={k}={v}" for k, v in TINY_UNET_ARGS.items()),
                                      "--quantizer", "portable", "--no-evaluate"], capsys)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # elsewhere, where the default input directory does not exist
    code, _, err = hostctl_inprocess(["evaluate", "--output-dir", str(run_dir / "results"), "--no-report"], capsys)
    assert code == 0, err
    assert str(unet_inputs.samples.resolve()) in err
    assert (run_dir / "results" / "metrics.json").is_file()


def failing_python(tmp_path: Path) -> Path:
    """An interpreter that answers hostctl's probe but whose payload dies."""
    script = tmp_path / "dying-python"
    script.write_text(f"#!/bin/sh\ncase \"$*\" in *container_payload*) echo boom >&2; exit 1;; esac\n"
                      f"exec {sys.executable} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_a_failed_run_names_its_directory(tmp_path, unet_inputs, capsys):
    out = tmp_path / "results"
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, out, "--quantizer", "portable", "--python",
                                               str(failing_python(tmp_path))), capsys)
    assert code == 1, err
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("results.failed-")]
    assert len(failed) == 1
    assert f"{failed[0]}/" in err and (failed[0] / "run.log").is_file()
    assert "hostctl clean" in err


def fake_failed(parent: Path, name: str, status: str = "failed", run_id: str = "20260101-000000-0123abcd") -> Path:
    path = parent / name
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"status": status, "run_id": run_id}))
    (path / "run.log").write_text("partial\n")
    return path


def test_clean_removes_failed_runs_but_the_newest_and_only_its_own(tmp_path, capsys, monkeypatch):
    import hostctl.runtime.docker

    monkeypatch.setattr(hostctl.runtime.docker, "clean", lambda dry_run: {})  # files only: no engine needed
    out = tmp_path / "results"
    old = [fake_failed(tmp_path, "results.failed-20260101-000000"),
           fake_failed(tmp_path, "results.failed-20260101-000000-2", status="interrupted"),
           fake_failed(tmp_path, "results.failed-20260102-093000")]
    newest = fake_failed(tmp_path, "results.failed-20260103-120000")
    not_ours = [fake_failed(tmp_path, "results.failed-notes"),  # not a name hostctl gives
                fake_failed(tmp_path, "results.failed-20260104-000000", status="succeeded"),
                fake_failed(tmp_path, "other.failed-20260101-000000"),  # another output directory's
                tmp_path / "results.failed-20260105-000000"]  # no run.json: not known to be a run's
    not_ours[-1].mkdir()
    (tmp_path / "results.failed-20260106-000000").symlink_to(newest)  # a link, not a directory of ours
    code, out_json, err = hostctl_inprocess(["clean", "--output-dir", str(out), "--dry-run", "--json"], capsys)
    assert code == 0, err
    listed = json.loads(out_json)["failed-run directories"]
    assert listed == [str(p) for p in old]
    assert all(p.exists() for p in old)
    code, _, err = hostctl_inprocess(["clean", "--output-dir", str(out)], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in old)
    assert newest.is_dir() and all(p.exists() for p in not_ours)
