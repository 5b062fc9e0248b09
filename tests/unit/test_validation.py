"""Bad input: exit 2, one line naming the file and the problem, nothing run, the output directory untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import (
    TINY_SIZE,
    USER_MODELS,
    Inputs,
    hostctl_inprocess,
    make_inputs,
    tiny_args,
    tiny_unet,
    tree_snapshot,
)


def drop_group(group: str) -> Callable[[Inputs], None]:
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            del h5[group]
    return mutate


def replace_sample(group: str, data: np.ndarray) -> Callable[[Inputs], None]:
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            name = next(iter(h5[group]))
            del h5[group][name]
            h5[group].create_dataset(name, data=data)
    return mutate


def empty_group(group: str) -> Callable[[Inputs], None]:
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            del h5[group]
            h5.create_group(group)
    return mutate


def with_nan(inputs: Inputs) -> None:
    with h5py.File(inputs.samples, "a") as h5:
        first = h5["calibration"][next(iter(h5["calibration"]))]
        first[0, 1, 2] = np.nan


def delete(name: str) -> Callable[[Inputs], None]:
    return lambda inputs: (inputs.dir / name).unlink()


def garbage(name: str) -> Callable[[Inputs], None]:
    return lambda inputs: (inputs.dir / name).write_bytes(b"\x00not what you think\xff" * 10)


def other_weights(inputs: Inputs) -> None:
    from container_payload.models.unet import Unet

    torch.save(Unet(num_classes=3, width=6, depth=2).state_dict(), inputs.state_dict)


def not_a_state_dict(inputs: Inputs) -> None:
    torch.save([1, 2, 3], inputs.state_dict)


def remove_input_dir(inputs: Inputs) -> None:
    for p in inputs.dir.iterdir():
        p.unlink()
    inputs.dir.rmdir()


def label_missing(inputs: Inputs) -> None:
    with h5py.File(inputs.samples, "a") as h5:
        del h5["labels"][next(iter(h5["labels"]))]


def label_wrong_shape(inputs: Inputs) -> None:
    with h5py.File(inputs.samples, "a") as h5:
        name = next(iter(h5["labels"]))
        del h5["labels"][name]
        h5["labels"].create_dataset(name, data=np.zeros((5, 5), np.uint8))


def nothing(_inputs: Inputs) -> None:
    pass


def poison_last(group: str, value: float) -> Callable[[Inputs], None]:
    """A bad value in the group's last sample: found by reading everything, not only the first batch."""
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            name = list(h5[group])[-1]
            data = h5[group][name][()]
            data[1, 2, 3] = value
            h5[group][name][...] = data
    return mutate


def relink(group: str, link_factory: Callable[[], object]) -> Callable[[Inputs], None]:
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            name = list(h5[group])[-1]
            del h5[group][name]
            h5[group][name] = link_factory()
    return mutate


def label_value(value: int, dtype: type = np.uint8) -> Callable[[Inputs], None]:
    def mutate(inputs: Inputs) -> None:
        with h5py.File(inputs.samples, "a") as h5:
            name = list(h5["labels"])[-1]
            data = h5["labels"][name][()].astype(dtype)
            data[4, 5] = value
            del h5["labels"][name]
            h5["labels"].create_dataset(name, data=data)
    return mutate


def nan_weights(inputs: Inputs) -> None:
    state = torch.load(inputs.state_dict)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float("nan")
    torch.save(state, inputs.state_dict)


def training_checkpoint(inputs: Inputs) -> None:
    torch.save({"epoch": 3, "model": torch.load(inputs.state_dict), "optimizer": {}}, inputs.state_dict)


def module_prefix(inputs: Inputs) -> None:
    torch.save({"module." + k: v for k, v in torch.load(inputs.state_dict).items()}, inputs.state_dict)


def pickled_module(inputs: Inputs) -> None:
    torch.save(tiny_unet(), inputs.state_dict)


CASES = {
    # id: (mutation, extra args, file the message names, words in the message)
    "input dir missing": (remove_input_dir, [], "inputs", "input directory does not exist"),
    "state_dict missing": (delete("state_dict.pt"), [], "state_dict.pt", "file not found"),
    "samples missing": (delete("quantization_samples.h5"), [], "quantization_samples.h5", "file not found"),
    "samples not hdf5": (garbage("quantization_samples.h5"), [], "quantization_samples.h5", "cannot be opened as HDF5"),
    "no calibration group": (drop_group("calibration"), [], "quantization_samples.h5", "no 'calibration' group"),
    "no test group": (drop_group("test"), [], "quantization_samples.h5", "no 'test' group"),
    "empty test group": (empty_group("test"), [], "quantization_samples.h5", "group 'test' is empty"),
    "wrong sample shape": (replace_sample("test", np.zeros((3, 16, 16), np.float32)), [],
                           "quantization_samples.h5", "has shape [3, 16, 16], expected [3, 32, 32]"),
    "integer samples": (replace_sample("calibration", np.zeros(TINY_SIZE, np.int32)), [],
                        "quantization_samples.h5", "dtype int32, expected a float type"),
    "nan in first batch": (with_nan, [], "quantization_samples.h5", "contains NaN or Inf"),
    "nan in the last calibration sample": (poison_last("calibration", np.nan), [], "quantization_samples.h5",
                                           "sample 'calibration/c005' contains NaN or Inf"),
    "inf in the last test sample": (poison_last("test", np.inf), [], "quantization_samples.h5",
                                    "sample 'test/t003' contains NaN or Inf"),
    "dangling soft link": (relink("calibration", lambda: h5py.SoftLink("/nowhere")), [], "quantization_samples.h5",
                           "'calibration/c005' is a link to /nowhere that does not resolve"),
    "external link to a missing file": (relink("test", lambda: h5py.ExternalLink("gone.h5", "/x")), [],
                                        "quantization_samples.h5", "is a link to gone.h5:/x that does not resolve"),
    "empty dataset": (relink("calibration", lambda: h5py.Empty("f")), [], "quantization_samples.h5",
                      "'calibration/c005' is an empty dataset"),
    "label class out of range": (label_value(3), [], "quantization_samples.h5",
                                 "holds class 3, but --num-classes is 3"),
    "negative label": (label_value(-1, np.int8), [], "quantization_samples.h5", "holds negative class -1"),
    "nan weights": (nan_weights, [], "state_dict.pt", "holds 1 NaN or Inf value"),
    "training checkpoint": (training_checkpoint, [], "state_dict.pt", "looks like a training checkpoint"),
    "DataParallel prefix": (module_prefix, [], "state_dict.pt", "does not fit the model"),
    "pickled module": (pickled_module, [], "state_dict.pt", "holds pickled Python objects"),
    "negative input size": (nothing, ["--input-size", "3", "-32", "32"], "--input-size 3 -32 32",
                            "every dimension must be positive"),
    "label missing": (label_missing, [], "quantization_samples.h5", "'labels' has no entry for test sample"),
    "label wrong shape": (label_wrong_shape, [], "quantization_samples.h5", "expected [32, 32] integers"),
    "weights of another model": (other_weights, [], "state_dict.pt", "does not fit the model"),
    "not a state_dict": (not_a_state_dict, [], "state_dict.pt", "does not hold a state_dict"),
    "corrupt state_dict": (garbage("state_dict.pt"), [], "state_dict.pt", "cannot be read as a torch state_dict"),
    "model not importable": (nothing, ["--model", "no_such_module:Net"], "no_such_module",
                             "cannot import module"),
    "model class missing": (nothing, ["--model", "tinyseg:Nope", "--model-path", str(USER_MODELS)], "tinyseg",
                            "has no attribute 'Nope'"),
    "bad model arg": (nothing, ["--model-arg", "width"], "--model-arg", "is not KEY=VALUE"),
    "xmodel from portable": (nothing, ["--quantizer", "portable", "--export", "xmodel"], "portable quantizer",
                             "cannot export xmodel"),
    "unknown export": (nothing, ["--export", "tflite"], "--export", "is not one of"),
    "model-path missing": (nothing, ["--model-path", "/no/such/dir"], "/no/such/dir", "is not a directory"),
    "memory with local runtime": (nothing, ["--memory", "8g"], "--memory", "applies to --runtime docker only"),
    "memory not a size": (nothing, ["--runtime", "docker", "--memory", "lots"], "--memory 'lots'",
                          "is not a size"),
    "requirements missing": (nothing, ["--requirements", "/no/such/req.txt"], "/no/such/req.txt",
                             "requirements file not found"),
}


@pytest.fixture
def previous_results(tmp_path: Path) -> Path:
    """An output directory holding the results of an earlier run."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "succeeded", "written": ["run.json", "quant_info.json"]}))
    (out / "quant_info.json").write_text('{"param": {}}')
    return out


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exits_2_with_one_line_and_leaves_results(case, tmp_path, previous_results, capsys):
    mutate, extra, names, problem = CASES[case]
    inputs = make_inputs(tmp_path / "inputs", tiny_unet())
    mutate(inputs)
    before = tree_snapshot(tmp_path / "results")
    entries = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = hostctl_inprocess(tiny_args(inputs, previous_results, *extra), capsys)
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    assert names in error_lines[0] and problem in error_lines[0], err
    assert "Traceback" not in err and "\x1b[" not in err
    if case in ("training checkpoint", "DataParallel prefix", "pickled module"):
        assert "hostctl prepare --checkpoint" in err, err
    assert tree_snapshot(tmp_path / "results") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == entries, "a run directory was created"


def test_model_that_fails_on_the_input_size(tmp_path, capsys):
    size = (3, 30, 30)  # two 2x2 pools of 30 give 7, whose 2x upsampling (14) cannot be concatenated with 15
    inputs = make_inputs(tmp_path / "inputs", tiny_unet(), size=size)
    args = tiny_args(inputs, tmp_path / "out")
    args[args.index("--input-size") + 1:args.index("--input-size") + 4] = map(str, size)
    code, _, err = hostctl_inprocess(args, capsys)
    assert code == 2
    assert "fails on an input of shape [1, 3, 30, 30]" in err
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tmp_path, unet_inputs, capsys):
    target = tmp_path / "results"
    target.write_text("keep me")
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, target), capsys)
    assert code == 2 and "output path exists and is not a directory" in err
    assert target.read_text() == "keep me"


def test_output_dir_with_foreign_files_is_refused(tmp_path, unet_inputs, capsys):
    target = tmp_path / "results"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, target), capsys)
    assert code == 2 and "holds files that hostctl did not write" in err
    assert (target / "thesis.tex").read_text() == "precious"


def test_malformed_config_file(tmp_path, unet_inputs, capsys, monkeypatch):
    (tmp_path / "hostctl.toml").write_text("runtime = [unclosed")
    monkeypatch.chdir(tmp_path)
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out"), capsys)
    assert code == 2 and "hostctl.toml" in err and "cannot be read as TOML" in err


def test_unknown_runtime_is_a_usage_error(tmp_path, unet_inputs, capsys):
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out", "--runtime", "kubernetes"), capsys)
    assert code == 2 and "--runtime 'kubernetes' is not one of: docker, local" in err


def test_json_mode_reports_the_error_as_json_too(tmp_path, unet_inputs, capsys):
    (unet_inputs.dir / "state_dict.pt").unlink()
    code, out, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out", "--json"), capsys)
    assert code == 2
    data = json.loads(out)
    assert data["status"] == "failed" and data["exit_code"] == 2 and "state_dict.pt: file not found" in data["error"]


@pytest.mark.parametrize("text,expected", [
    ("calib-batch = 4\n", "unknown key 'calib-batch' for `hostctl quantize`"),
    ("[quantize]\nnum-classes = \"seven\"\n", "key [quantize] 'num-classes': Input should be a valid integer"),
    ("input-size = [3, 64]\n", "key 'input-size': Value error, 3 values are required, but 2 given"),
    ("[quantise]\nruntime = \"local\"\n", "unknown table [quantise]"),
])
def test_config_file_keys_and_values_are_checked(tmp_path, unet_inputs, capsys, monkeypatch, text, expected):
    (tmp_path / "hostctl.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOSTCTL_NUM_CLASSES", raising=False)
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out"), capsys)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'hostctl.toml'}: {expected}"), err
    assert "env var" not in err
    if "calib-batch " in text:
        assert "Did you mean 'calib-batch-size'?" in err


def test_usage_errors_are_one_line_and_name_an_env_var_only_when_it_is_set(tmp_path, unet_inputs, capsys,
                                                                            monkeypatch):
    monkeypatch.delenv("HOSTCTL_CALIB_BATCH_SIZE", raising=False)
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out", "--calib-batch-size", "0"), capsys)
    assert code == 2
    assert err.splitlines()[0] == ("error: Invalid value for '--calib-batch-size': Input should be greater than or "
                                   "equal to 1")
    assert "╭" not in err and "env var" not in err
    monkeypatch.setenv("HOSTCTL_QUANT_OPT", "nine")  # a flag tiny_args does not pass: the variable is used
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out"), capsys)
    assert code == 2 and "(env var: 'HOSTCTL_QUANT_OPT')" in err.splitlines()[0], err
