"""What is knowable before any work is checked before any work: the exports a quantizer can write, and whether
pytorch_nndct imports where vai or hybrid would run. One line, exit 2 or 3, no prediction made."""

from __future__ import annotations

import importlib.util
import re

import pytest
from helpers import FAKE_NNDCT, tiny_args

from container_payload.job import SUPPORTED_EXPORTS
from hostctl.errors import UsageError
from hostctl.options import QuantizeOptions
from hostctl.runtime.local import LocalRuntime
from hostctl.validate import check_exports

no_nndct = pytest.mark.skipif(importlib.util.find_spec("pytorch_nndct") is not None,
                              reason="pytorch_nndct imports here")


def suggested_exports(hint: str) -> list[str]:
    return re.findall(r"--export (\w+)", hint)


@pytest.mark.parametrize("asked", [("xmodel",), ("onnx",), ("xmodel", "onnx")])
def test_the_portable_quantizer_is_told_only_exports_it_can_write(asked):
    """The portable quantizer with --export xmodel used to suggest --export onnx, which then failed."""
    with pytest.raises(UsageError) as caught:
        check_exports("portable", asked)
    suggested = suggested_exports(caught.value.hint or "")
    assert suggested and all(fmt in (*SUPPORTED_EXPORTS["portable"], "none") for fmt in suggested)
    assert "--quantizer vai or hybrid" in (caught.value.hint or "")


def test_supported_exports_pass():
    for quantizer, formats in SUPPORTED_EXPORTS.items():
        check_exports(quantizer, formats)


@pytest.mark.parametrize("fmt", ["onnx", "xmodel"])
def test_an_unsupported_export_is_one_line_before_any_work(tmp_path, unet_inputs, capsys, fmt):
    from helpers import hostctl_inprocess

    out = tmp_path / "out"
    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, out, "--quantizer", "portable", "--export", fmt), capsys)
    assert code == 2, err
    assert f"the portable quantizer cannot export {fmt}" in err
    assert "Traceback" not in err and "Float predictions" not in err
    assert not out.exists() and not list(tmp_path.glob("out.failed-*"))


@no_nndct
@pytest.mark.parametrize("quantizer", ["vai", "hybrid"])
def test_vai_and_hybrid_without_nndct_are_an_environment_problem_before_any_work(tmp_path, unet_inputs, capsys,
                                                                                  quantizer):
    out = tmp_path / "out"
    from helpers import hostctl_inprocess

    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, out, "--quantizer", quantizer), capsys)
    assert code == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: --quantizer {quantizer} needs pytorch_nndct"), err
    assert lines[1].startswith("hint: Use --quantizer portable")
    assert "Traceback" not in err and "Float predictions" not in err
    assert not out.exists()


@no_nndct
def test_auto_with_an_export_only_nndct_writes_is_refused_where_nndct_does_not_import(tmp_path, unet_inputs, capsys):
    from helpers import hostctl_inprocess

    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out", "--export", "onnx"), capsys)
    assert code == 2, err
    assert "what --quantizer auto picks where pytorch_nndct does not import" in err
    assert "Float predictions" not in err


def test_the_probe_sees_what_the_payload_sees(tmp_path, monkeypatch):
    """The fake pytorch_nndct of the tests imports container_payload, as the payload's path provides it."""
    monkeypatch.setenv("PYTHONPATH", str(FAKE_NNDCT))
    runtime = LocalRuntime(QuantizeOptions(runtime="local", quantizer="vai"), tmp_path, None, None)  # type: ignore[arg-type]
    assert runtime._import_problem("pytorch_nndct") is None
    runtime.prepare()
    problem = runtime._import_problem("no_such_module_hostctl")
    assert problem is not None and "No module named 'no_such_module_hostctl'" in problem


def test_a_module_that_prints_while_it_imports_is_not_taken_for_a_failure(tmp_path, monkeypatch):
    """pytorch_nndct 3.5 prints "CUDA (HIP) is not available, ..." on stdout when it imports on a CPU machine: the
    probe once returned that line as the reason, and --quantizer vai/hybrid refused a working nndct."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "chatty_hostctl.py").write_text('print("CUDA (HIP) is not available, or CUDA_HOME not '
                                                         'found")\n')
    (tmp_path / "mods" / "broken_hostctl.py").write_text('print("loading")\nraise ImportError("no kernels")\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mods"))
    runtime = LocalRuntime(QuantizeOptions(runtime="local", quantizer="vai"), tmp_path, None, None)  # type: ignore[arg-type]
    assert runtime._import_problem("chatty_hostctl") is None
    assert runtime._import_problem("broken_hostctl") == "ImportError: no kernels"
