"""Issue 24, cases 5 to 15: inputs and environments that used to end in a traceback, the wrong exit code or a broken
--json. Each one now gives one `error:` line naming the file and the problem, the documented exit code, the JSON
summary under --json, and leaves the output directory (and the directory beside it) as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import (
    Inputs,
    hostctl_inprocess,
    make_inputs,
    tiny_args,
    tiny_unet,
    tree_snapshot,
)

import hostctl.cli.diff  # noqa: F401 - registers the verbs, whatever hostctl.cli imports
import hostctl.cli.evaluate  # noqa: F401
from container_payload.job import FLOAT_PREDS, QUANT_PREDS
from hostctl.errors import EnvironmentProblem, InputError, UsageError
from hostctl.evaluate import evaluate
from hostctl.runtime.local import check_interpreter
from hostctl.validate import check_output_path_lengths


@pytest.fixture
def previous_results(tmp_path: Path) -> Path:
    """An output directory holding the results of an earlier run."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "succeeded", "written": ["run.json", "quant_info.json"]}))
    (out / "quant_info.json").write_text('{"param": {}}')
    return out


def refused(args: list[str], capsys: pytest.CaptureFixture[str], code: int, *words: str,
            untouched: Path | None = None) -> dict:
    """Run the CLI in-process with --json; assert the exit code, one `error:` line holding the words, no traceback,
    the JSON summary alone on stdout, and (when given) a directory whose contents and neighbours did not change."""
    if untouched is not None:
        before, beside = tree_snapshot(untouched), sorted(os.listdir(untouched.parent))
    got, out, err = hostctl_inprocess([*args, "--json"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert got == code, err
    assert len(errors) == 1, err
    assert all(w in errors[0] for w in words), errors[0]
    assert "Traceback" not in err
    summary = json.loads(out)  # nothing but the summary on stdout
    assert summary["status"] == "failed" and summary["exit_code"] == code
    if untouched is not None:
        assert tree_snapshot(untouched) == before
        assert sorted(os.listdir(untouched.parent)) == beside, "something was created beside the output"
    return summary


def portable(inputs: Inputs, out: Path, *extra: str) -> list[str]:
    return tiny_args(inputs, out, "--quantizer", "portable", *extra)


# -- 5: a state_dict whose keys are not all names -------------------------------------------------------------------

@pytest.mark.parametrize("key", [3, (1, 2)], ids=["int key", "tuple key"])
def test_state_dict_with_a_key_that_is_not_a_name(tmp_path, previous_results, capsys, key):
    inputs = make_inputs(tmp_path / "inputs", tiny_unet())
    torch.save({**torch.load(inputs.state_dict), key: torch.zeros(1)}, inputs.state_dict)
    refused(portable(inputs, previous_results), capsys, 2, "state_dict.pt", f"its key {key!r}",
            "is not a parameter name", untouched=previous_results)


# -- 7: hostctl diff on deeply nested JSON ------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100, 200_000])
def test_diff_of_deeply_nested_json(tmp_path, capsys, depth):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"param": {}, "output": {}}))
    deep = tmp_path / "deep.json"
    deep.write_text('{"param": {}, "output": {}, "x": ' + "[" * depth + "]" * depth + "}")
    refused(["diff", str(good), str(deep)], capsys, 2, "deep.json", "nested")
    refused(["diff", str(deep), str(good)], capsys, 2, "deep.json", "nested")


# -- 8: HOSTCTL_DEBUG is read as a boolean ------------------------------------------------------------------------

@pytest.mark.parametrize("value,traceback", [("false", False), ("FALSE", False), ("off", False), ("no", False),
                                             ("0", False), ("", False), ("1", True), ("True", True),
                                             ("yes", True), ("ON", True)])
def test_hostctl_debug_values(tmp_path, unet_inputs, capsys, monkeypatch, value, traceback):
    monkeypatch.setenv("HOSTCTL_DEBUG", value)
    unet_inputs.state_dict.unlink()
    code, _, err = hostctl_inprocess(portable(unet_inputs, tmp_path / "out"), capsys)
    assert code == 2 and "state_dict.pt: file not found" in err
    assert ("Traceback" in err) == traceback, err


@pytest.mark.parametrize("value", ["maybe", "2", "y"])
def test_hostctl_debug_that_is_neither_true_nor_false(tmp_path, unet_inputs, capsys, monkeypatch, value):
    monkeypatch.setenv("HOSTCTL_DEBUG", value)
    refused(portable(unet_inputs, tmp_path / "out"), capsys, 2, "HOSTCTL_DEBUG", repr(value))
    assert not (tmp_path / "out").exists()
    refused(["diff", "a.json", "b.json"], capsys, 2, "HOSTCTL_DEBUG")  # every verb


# -- 9: a sample stored with an HDF5 filter that is not available -----------------------------------------------

def test_sample_with_an_unavailable_hdf5_filter(tmp_path, previous_results, capsys):
    blosc = 32001  # a plugin filter (HDF Group's registered id), which h5py does not carry
    if h5py.h5z.filter_avail(blosc):
        pytest.skip("this HDF5 has the blosc plugin")
    inputs = make_inputs(tmp_path / "inputs", tiny_unet())
    with h5py.File(inputs.samples, "a") as h5:
        data = h5["test/t002"][()]
        del h5["test/t002"]
        item = h5["test"].create_dataset("t002", shape=data.shape, dtype="f4", chunks=data.shape,
                                         compression=blosc, allow_unknown_filter=True)
        item.id.write_direct_chunk((0, 0, 0), data.tobytes())  # stored as if compressed: reading needs the filter
    with h5py.File(inputs.samples, "r") as h5, pytest.raises(OSError):
        h5["test/t002"][()]  # what the payload would have met
    refused(portable(inputs, previous_results), capsys, 2, "quantization_samples.h5", "'test/t002'",
            "HDF5 filter 32001 (blosc)", "not available", untouched=previous_results)


# -- 10: output directory names and paths too long for the file system -----------------------------------------

def test_output_directory_name_too_long(tmp_path, unet_inputs, capsys):
    out = tmp_path / ("o" * 250)
    refused(portable(unet_inputs, out), capsys, 2, "output directory name is 250 bytes long", "255 bytes per name",
            untouched=unet_inputs.dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_output_path_longer_than_path_max(tmp_path, unet_inputs, capsys):
    out = tmp_path.joinpath(*["d" * 200] * 25)  # every part fits NAME_MAX, the whole is over 4096 bytes
    refused(portable(unet_inputs, out), capsys, 2, "output path is", "limit of 4096 bytes",
            untouched=unet_inputs.dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_output_name_limits_leave_room_for_hostctls_own_names(tmp_path):
    """`.<name>.hostctl-journal-<run id>.json.tmp` is the longest name a run puts beside the output directory:
    51 bytes more than the name, so 204 is the longest name a 255-byte NAME_MAX allows."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    check_output_path_lengths(tmp_path / ("n" * (name_max - 51)))
    with pytest.raises(InputError, match=f"at most {name_max - 51} bytes"):
        check_output_path_lengths(tmp_path / ("n" * (name_max - 50)))
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    deep = tmp_path.joinpath(*["p" * 100] * (path_max // 101 + 1))
    with pytest.raises(InputError, match="output path is"):
        check_output_path_lengths(deep)


# -- 11: a model module that calls sys.exit on import, in its constructor or its forward -------------------------

EXITS = {
    "on import": "import sys\nsys.exit(3)\n",
    "in the constructor": "import sys\nfrom torch import nn\n\nclass Net(nn.Module):\n"
                          "    def __init__(self):\n        super().__init__()\n        sys.exit(3)\n",
    "in forward": "import sys\nfrom torch import nn\n\nclass Net(nn.Module):\n"
                  "    def forward(self, x):\n        sys.exit(3)\n",
}


@pytest.mark.parametrize("where", list(EXITS))
def test_model_that_calls_sys_exit(tmp_path, unet_inputs, previous_results, capsys, where):
    models = tmp_path / "models"
    models.mkdir()
    module = f"exits_{where.replace(' ', '_')}"
    (models / f"{module}.py").write_text(EXITS[where])
    torch.save({}, unet_inputs.state_dict)  # the model has no parameters
    summary = refused(portable(unet_inputs, previous_results, "--model", f"{module}:Net", "--model-path",
                               str(models)), capsys, 2, f"--model {module}:Net", untouched=previous_results)
    assert ("sys.exit(3)" in summary["error"]) or ("SystemExit: 3" in summary["error"]), summary


# -- 12: a model that prints when imported, and one whose forward drops the batch dimension ---------------------

CHATTY = '''
import torch
from torch import nn

print("model module imported")


class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        print("model built")
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        print("forward")
        return self.conv(x)


class Squeezed(Net):
    def forward(self, x):
        print("forward")
        return self.conv(x)[0]


class TooManyClasses(Net):
    def __init__(self):
        super().__init__(classes=5)


class Smaller(Net):
    def forward(self, x):
        return self.conv(x)[:, :, ::2, ::2]
'''


class Conv(torch.nn.Module):
    """The weights of the CHATTY models, without importing their module here: hostctl imports it first."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 1)


@pytest.fixture
def chatty(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Inputs, Path, str]:
    """Inputs for a model module that prints; a module name of its own per test (imports are cached)."""
    models = tmp_path / "models"
    models.mkdir()
    module = f"chatty_{abs(hash(request.node.nodeid)):x}"
    (models / f"{module}.py").write_text(CHATTY)
    return make_inputs(tmp_path / "inputs", Conv()), models, module


def test_model_output_stays_off_stdout(tmp_path, chatty, capsys):
    inputs, models, module = chatty
    args = portable(inputs, tmp_path / "out", "--model", f"{module}:Squeezed", "--model-path", str(models))
    code, out, err = hostctl_inprocess([*args, "--json"], capsys)
    assert code == 2 and json.loads(out)["exit_code"] == 2  # stdout holds the summary and nothing else
    assert "model module imported" in err and "model built" in err and "forward" in err  # shown with the rest


@pytest.mark.parametrize("cls,words", [
    ("Squeezed", ("returns shape [3, 32, 32]", "expected [1, classes, H, W]")),
    ("TooManyClasses", ("5 classes, but --num-classes is 3",)),
    ("Smaller", ("score maps of [16, 16], but the labels are [32, 32]",)),
])
def test_model_output_shape_is_checked_before_the_run(tmp_path, chatty, previous_results, capsys, cls, words):
    inputs, models, module = chatty
    torch.save(Conv(5 if cls == "TooManyClasses" else 3).state_dict(), inputs.state_dict)
    refused(portable(inputs, previous_results, "--model", f"{module}:{cls}", "--model-path", str(models)),
            capsys, 2, f"--model {module}:{cls}", *words, untouched=previous_results)


def test_class_count_and_size_matter_only_when_evaluating(tmp_path, chatty):
    """Without the metrics a model may have other classes or another output size; a missing batch dimension
    is refused all the same (the prediction files hold [1, classes, H, W] per sample)."""
    from hostctl.options import QuantizeOptions
    from hostctl.validate import _check_output_shape

    inputs, _, module = chatty
    opts = QuantizeOptions(input_dir=inputs.dir, output_dir=tmp_path / "out", input_size=(3, 32, 32),
                           num_classes=3, model=f"{module}:Net", evaluate=False)
    _check_output_shape(opts, (1, 5, 16, 16), has_labels=True)
    with pytest.raises(UsageError, match=r"expected \[1, classes, H, W\]"):
        _check_output_shape(opts, (5, 16, 16), has_labels=True)


# -- 13: --python that lacks what the payload imports --------------------------------------------------------

@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real interpreter without torch, numpy or h5py: a venv without the system's packages."""
    where = tmp_path_factory.mktemp("bare-venv")
    venv.create(where, with_pip=False, symlinks=True)
    return where / "bin" / "python"


def test_python_without_the_payloads_packages(tmp_path, unet_inputs, previous_results, capsys, bare_python,
                                              monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # as a user's shell has it: nothing of this checkout's
    refused(portable(unet_inputs, previous_results, "--python", str(bare_python)), capsys, 3,
            f"--python {bare_python}", "cannot import torch, numpy, h5py", untouched=previous_results)


def test_interpreter_check(tmp_path):
    check_interpreter(sys.executable, "this python")  # hostctl's own interpreter has them all
    script = tmp_path / "not-python"
    script.write_text("#!/bin/sh\necho nonsense\n")
    script.chmod(0o755)
    with pytest.raises(EnvironmentProblem, match="is not a Python 3.8 or later interpreter"):
        check_interpreter(str(script), str(script))


# -- 15: evaluate with predictions missing for a test sample --------------------------------------------------

def predictions(path: Path, names: list[str]) -> Path:
    with h5py.File(path, "w", track_order=True) as h5:
        for name in names:
            h5.create_dataset(name, data=np.zeros((1, 3, 2, 4), np.float32))
    return path


@pytest.fixture
def run_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    samples = tmp_path / "quantization_samples.h5"
    with h5py.File(samples, "w", track_order=True) as h5:
        test = h5.create_group("test", track_order=True)
        for name in "abcd":
            test.create_dataset(name, data=np.zeros((3, 2, 4), np.float32))
    return samples, predictions(tmp_path / FLOAT_PREDS, list("abcd")), tmp_path / QUANT_PREDS


@pytest.mark.parametrize("quant,flt,words", [
    ("abd", "abcd", ("quantization_test_preds.h5", "lacks predictions for 'c' found in float_test_preds.h5")),
    ("abcd", "abd", ("float_test_preds.h5", "lacks predictions for 'c' found in quantization_test_preds.h5")),
    ("abd", "abd", ("quantization_test_preds.h5", "lacks predictions for test sample 'c'", "3 of 4 predicted")),
    ("abz", "abz", ("quantization_test_preds.h5", "'z'", "has no test sample")),
])
def test_evaluate_refuses_predictions_missing_a_sample(run_files, quant, flt, words):
    samples, float_preds, quant_preds = run_files
    predictions(float_preds, list(flt))
    predictions(quant_preds, list(quant))
    with pytest.raises(InputError) as caught:
        evaluate(samples, float_preds, quant_preds, 3)
    assert all(w in str(caught.value) for w in words), caught.value


def test_evaluate_accepts_the_first_test_samples(run_files):
    """A run with --test-samples-limit 2 predicts the first two test samples only."""
    samples, float_preds, quant_preds = run_files
    predictions(float_preds, ["a", "b"])
    predictions(quant_preds, ["a", "b"])
    assert evaluate(samples, float_preds, quant_preds, 3).num_samples == 2


def test_evaluate_cli_with_a_quantized_prediction_missing(tmp_path, run_files, capsys):
    samples, float_preds, _ = run_files
    results = tmp_path / "results"
    results.mkdir()
    float_preds.rename(results / FLOAT_PREDS)
    predictions(results / QUANT_PREDS, list("abd"))
    refused(["evaluate", "--input-dir", str(samples.parent), "--output-dir", str(results)], capsys, 2,
            QUANT_PREDS, "lacks predictions for 'c'", untouched=results)


# -- 14 (in this process): a signal outside a run, even inside the model's import, and faults nobody expected ----

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_during_the_models_import(tmp_path, unet_inputs, previous_results, capsys, sig):
    """The signal reaches hostctl as a BaseException: the `except Exception` around a model's import does not take
    it for the model's failure (exit 2), and the command ends with the signal's code, one line and the JSON."""
    models = tmp_path / "models"
    models.mkdir()
    module = f"signals_{sig.name.lower()}"
    (models / f"{module}.py").write_text(f"import os\nos.kill(os.getpid(), {int(sig)})\nNet = None\n")
    before = signal.getsignal(sig)
    before_tree = tree_snapshot(previous_results)
    code, out, err = hostctl_inprocess(portable(unet_inputs, previous_results, "--model", f"{module}:Net",
                                                "--model-path", str(models), "--json"), capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 128 + sig, err
    assert len(errors) == 1 and f"interrupted by {sig.name}" in errors[0] and "Traceback" not in err
    assert json.loads(out) == {"status": "interrupted", "error": errors[0][len("error: "):], "hint": None,
                               "exit_code": 128 + sig}
    assert tree_snapshot(previous_results) == before_tree
    assert signal.getsignal(sig) == before  # main() gave the process its handlers back


def test_unexpected_exception_is_one_line(tmp_path, capsys, monkeypatch):
    import hostctl.cli.diff

    def broken(*_args: object) -> None:
        raise TypeError("sequence item 0: expected str instance, int found")

    monkeypatch.setattr(hostctl.cli.diff, "diff_files", broken)
    summary = refused(["diff", "a.json", "b.json"], capsys, 1, "unexpected TypeError: sequence item 0")
    assert "--debug" in summary["hint"]


def test_a_stop_lost_in_a_callback_still_ends_the_command_as_interrupted(capsys):
    """A signal handled while a weakref callback runs: Python only prints what the callback raised. Seen once under
    CI's load (test_signal_while_starting); the signal must not be lost."""
    import gc
    import signal as signal_module
    import weakref

    from hostctl import signals
    from hostctl.errors import Interrupted

    class Thing:
        pass

    with signals.stop_on_signals():
        thing = Thing()
        ref = weakref.ref(thing, lambda _ref: os.kill(os.getpid(), signal_module.SIGTERM))
        del thing
        gc.collect()
        assert ref() is None
        assert "Traceback" not in capsys.readouterr().err  # the lost Stop is kept, not printed
        with pytest.raises(Interrupted) as interrupted:  # ... and the next run's trap raises it
            with signals.trap_signals():
                pass
    assert interrupted.value.exit_code == 143
    assert signals.pending_stop() is None


@pytest.mark.parametrize("first,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_while_the_interpreter_shuts_down_keep_the_first_exit_code(tmp_path, first, code):
    """CI once saw exit -2 for "a second Ctrl-C exits at once": the first Ctrl-C's cleanup had finished and the
    second came after the command's handlers were gone, where Python's own ended the process by SIGINT. Here
    SIGINTs keep coming, every 2 ms, from the command's error line to the process's end."""
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        import hostctl.cli
        def keep_interrupting():
            time.sleep(0.2)
            while True:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.002)
        def stopped(**_kwargs):
            threading.Thread(target=keep_interrupting, daemon=True).start()
            os.kill(os.getpid(), {int(first)})
            time.sleep(5)
        hostctl.cli.app = stopped
        import hostctl.ui
        error = hostctl.ui.Reporter.error
        def slow_error(self, *args):
            error(self, *args)
            time.sleep(0.5)
        hostctl.ui.Reporter.error = slow_error
        sys.argv = ["hostctl", "--json", "clean"]
        hostctl.cli.main()
    """)
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.count("error: interrupted by") == 1, proc.stderr
        assert json.loads(proc.stdout)["exit_code"] == code
