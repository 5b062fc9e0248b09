"""hostctl quantize --runtime local, end to end, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from helpers import (
    USER_MODELS,
    make_inputs,
    run_hostctl,
    tiny_args,
    tiny_unet,
    tree_snapshot,
)

pytestmark = pytest.mark.slow
SECTION4 = {"quant_info.json", "quantization_test_preds.h5", "float_test_preds.h5", "run.log", "run.json",
            "job.json", "result.json"}


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_vai_backend_through_fake_nndct(tmp_path, unet_inputs, fake_nndct_env):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate", "--json"),
                       env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    files = {p.name for p in out.iterdir()}
    assert SECTION4 | {"Unet_int.xmodel", "Unet.py"} <= files
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded" and summary["backend"] == "vai"
    assert manifest(out)["status"] == "succeeded"
    info = json.loads((out / "quant_info.json").read_text())
    assert info["bias_corrected"] is True  # nndct's default quant_opt 3 reached the quantizer
    assert all(key.startswith("Unet::") for key in info["param"])
    log = (out / "run.log").read_text()
    assert "[VAIQ_NOTE]" in log and "\x1b[" not in log, "nndct's ANSI colours belong on the terminal only"
    with h5py.File(out / "quantization_test_preds.h5") as h5:
        assert list(h5) == [f"t{i:03d}" for i in range(4)]
        assert h5["t000"].shape == (1, 3, 32, 32)


@pytest.mark.parametrize("quantizer,backend", [("vai", "vai"), ("auto", "hybrid")])
def test_quant_opt_reaches_nndct(tmp_path, unet_inputs, fake_nndct_env, quantizer, backend):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", quantizer, "--quant-opt", "0", "--no-evaluate",
                                 "--export", "none"), env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "quant_info.json").read_text())["bias_corrected"] is False
    assert not (out / "Unet_int.xmodel").exists() and not (out / "bias_corr.pth").exists()
    # auto: hybrid where pytorch_nndct imports, and nndct's test mode accepted the files without bias correction
    assert manifest(out)["payload"]["backend"] == backend


def test_hybrid_through_fake_nndct(tmp_path, unet_inputs, fake_nndct_env):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "hybrid", "--no-evaluate", "--json"),
                       env=fake_nndct_env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "hybrid" and summary["check"]["passed"] is True
    assert SECTION4 | {"Unet_int.xmodel", "Unet.py", "bias_corr.pth"} <= {p.name for p in out.iterdir()}
    payload = manifest(out)["payload"]
    assert payload["backend"] == "hybrid" and payload["warnings"] == []
    assert payload["check"]["samples"] == 4 and payload["check"]["max_abs_diff"] == 0.0
    assert payload["check"]["argmax_agreement"] == 1.0
    assert {"calibrate", "test", "check", "export"} <= set(payload["timings"])
    assert "graph_md5" not in json.loads((out / "quant_info.json").read_text())


def test_hybrid_falls_back_to_vai_when_nndct_disagrees(tmp_path, unet_inputs, fake_nndct_env):
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "hybrid", "--no-evaluate", "--json"),
                       env={**fake_nndct_env, "FAKE_NNDCT_FAIL": "test_outputs"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "vai", "after a failed check the results are nndct's own"
    payload = manifest(out)["payload"]
    assert payload["backend"] == "vai" and payload["check"]["passed"] is False
    assert payload["check"]["samples"] == 4 and payload["check"]["argmax_agreement"] < 0.999
    assert any("falling back to vai_q_pytorch" in w for w in payload["warnings"])
    assert {"calibrate", "test", "check", "vai_calibrate", "vai_test", "export"} <= set(payload["timings"])
    assert (out / "Unet_int.xmodel").exists()
    info = json.loads((out / "quant_info.json").read_text())
    assert info["version"] == "3.5.0+fake" and "graph_md5" in info, "quant_info.json is nndct's own"


@pytest.mark.parametrize("step,missing", [("export_quant_config", "quant_info.json"),
                                          ("export_xmodel", "Unet_int.xmodel")])
def test_nndct_errors_that_only_log_fail_the_run(tmp_path, unet_inputs, fake_nndct_env, step, missing):
    out = tmp_path / "out"
    assert run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate"),
                       env=fake_nndct_env).returncode == 0
    before = tree_snapshot(out)
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate"),
                       env={**fake_nndct_env, "FAKE_NNDCT_FAIL": step})
    assert proc.returncode == 1, proc.stderr
    assert f"pytorch_nndct did not write {missing}" in proc.stderr
    assert tree_snapshot(out) == before, "a failed run must not touch earlier results"
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("out.failed-")]
    assert len(failed) == 1
    assert manifest(failed[0])["status"] == "failed"
    assert "[VAIQ_ERROR]" in (failed[0] / "run.log").read_text()


def test_real_nndct_without_xir_is_exit_3_before_calibrating(tmp_path, unet_inputs, fake_nndct_env):
    """vai_q_pytorch's own tree (nndct_shared) without the XIR bindings can calibrate but not export an xmodel."""
    shared = tmp_path / "shared"
    (shared / "nndct_shared").mkdir(parents=True)
    (shared / "nndct_shared" / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(shared), fake_nndct_env["PYTHONPATH"]])}
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "hybrid", "--no-evaluate"), env=env)
    assert proc.returncode == 3, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "xmodel export needs the xir package" in error[0] and "--export none" in error[0]
    assert "Traceback" not in proc.stderr and "Calibrating" not in proc.stderr and "predictions" not in proc.stderr
    assert run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "hybrid", "--no-evaluate", "--export", "none"),
                       env=env).returncode == 0


@pytest.mark.parametrize("hard", [False, True])
def test_payload_that_exits_0_without_results_fails(tmp_path, hard):
    inputs = make_inputs(tmp_path / "in", _user_model("ExitsZero"))
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(inputs, out, "--model", "misbehaving:ExitsZero", "--model-path", str(USER_MODELS),
                                 "--model-arg", f"hard={'true' if hard else 'false'}", "--quantizer", "portable"),
                       env={"HOSTCTL_TEST_MISBEHAVE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "exited with status 0 but wrote no result.json" in proc.stderr
    assert not out.exists()


def _user_model(name: str, **kwargs):
    sys.path.insert(0, str(USER_MODELS))
    try:
        import misbehaving
        import tinyseg
    finally:
        sys.path.remove(str(USER_MODELS))
    module = tinyseg if hasattr(tinyseg, name) else misbehaving
    return getattr(module, name)(**kwargs)


def _start_slow_run(tmp_path: Path, out: Path, delay: float = 0.4) -> subprocess.Popen:
    inputs = make_inputs(tmp_path / "in", _user_model("Slow"), n_calib=40, n_test=2)
    args = tiny_args(inputs, out, "--model", "misbehaving:Slow", "--model-path", str(USER_MODELS),
                     "--model-arg", f"delay={delay}", "--calib-batch-size", "1", "--quantizer", "portable")
    return subprocess.Popen([sys.executable, "-m", "hostctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="200"))


def _wait_for_calibration(tmp_path: Path, deadline: float = 120.0) -> Path:
    """The staging directory, once its payload has started calibrating."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for log in tmp_path.glob(".out.hostctl-tmp-*/run.log"):
            if "calibration" in log.read_text(errors="replace") and (log.parent / "float_test_preds.h5").exists():
                time.sleep(1.0)  # well into calibration
                return log.parent
        time.sleep(0.1)
    raise AssertionError("the run never reached calibration")


def _payload_processes(run_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "container_payload"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(run_dir.name) in line]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_calibration_cleans_up_and_keeps_results(tmp_path, sig, code):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json", "quant_info.json"]}')
    (out / "quant_info.json").write_text('{"param": {"old": [[8, 3]]}}')
    before = tree_snapshot(out)
    proc = _start_slow_run(tmp_path, out)
    run_dir = _wait_for_calibration(tmp_path)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "interrupted by " + signal.Signals(sig).name in stderr
    assert tree_snapshot(out) == before
    assert not run_dir.exists()
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("out.failed-")]
    assert len(failed) == 1 and manifest(failed[0])["status"] == "interrupted"
    assert _payload_processes(run_dir) == []


def test_second_run_into_the_same_output_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    first = _start_slow_run(tmp_path, out, delay=0.2)
    try:
        _wait_for_calibration(tmp_path)
        second = run_hostctl(tiny_args(make_inputs(tmp_path / "in2", tiny_unet()), out, "--quantizer", "portable"))
        assert second.returncode == 2
        assert "another hostctl run" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


ODD_NAMES = ["sample one", "échantillon ✓", "日本語 3", "with.dots,commas; and 'quotes'"]


def test_portable_on_a_user_model_with_odd_sample_names(tmp_path):
    inputs = make_inputs(tmp_path / "in", _user_model("TinySeg"), n_test=len(ODD_NAMES), test_names=ODD_NAMES)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = run_hostctl(tiny_args(inputs, out, "--model", "tinyseg:TinySeg", "--model-path", str(USER_MODELS),
                                 "--quantizer", "portable", "--json"))
    print(f"portable run on TinySeg: {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, proc.stderr
    assert SECTION4 | {"metrics.json", "report"} <= {p.name for p in out.iterdir()}
    assert manifest(out)["status"] == "succeeded"
    for name in ("quantization_test_preds.h5", "float_test_preds.h5"):
        with h5py.File(out / name) as h5:
            assert list(h5) == ODD_NAMES
            assert all(h5[n].shape == (1, 3, 32, 32) and h5[n].dtype == "float32" for n in ODD_NAMES)
    info = json.loads((out / "quant_info.json").read_text())
    assert {"param", "output", "input", "fast_finetuned", "bias_corrected", "version", "graph_md5"} <= set(info)
    assert "TinySeg::stem.0.weight" in info["param"] and "TinySeg::stem.0.bias" in info["param"]
    assert json.loads(proc.stdout)["metrics"]["num_samples"] == len(ODD_NAMES)


def test_missing_calibration_group_exits_2_before_anything_runs(tmp_path):
    inputs = make_inputs(tmp_path / "in", _user_model("TinySeg"))
    with h5py.File(inputs.samples, "a") as h5:
        del h5["calibration"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{}")
    before = tree_snapshot(out)
    proc = run_hostctl(tiny_args(inputs, out, "--model", "tinyseg:TinySeg", "--model-path", str(USER_MODELS),
                                 "--quantizer", "portable"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "quantization_samples.h5: has no 'calibration' group" in proc.stderr
    assert tree_snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_config_file_and_environment_precedence(tmp_path):
    inputs = make_inputs(tmp_path / "in", tiny_unet())
    # Wrong sizes from the file and the variable show up in the validation message, so we can see who won.
    (tmp_path / "hostctl.toml").write_text('[quantize]\ninput-size = [3, 8, 8]\nruntime = "local"\n')
    args = [a for a in tiny_args(inputs, tmp_path / "out") if a not in ("--runtime", "local")]
    i = args.index("--input-size")
    del args[i:i + 4]
    from_file = run_hostctl(args, cwd=tmp_path)
    assert from_file.returncode == 2 and "expected [3, 8, 8]" in from_file.stderr
    from_env = run_hostctl(args, cwd=tmp_path, env={"HOSTCTL_INPUT_SIZE": "3 16 16"})
    assert from_env.returncode == 2 and "expected [3, 16, 16]" in from_env.stderr
    from_flag = run_hostctl(args + ["--input-size", "3", "32", "32", "--no-evaluate"], cwd=tmp_path,
                            env={"HOSTCTL_INPUT_SIZE": "3 16 16"})
    assert from_flag.returncode == 0, from_flag.stderr


def test_quantize_compile_locally_without_the_image_arch_files_is_exit_3(tmp_path, unet_inputs, fake_nndct_env):
    """--runtime local runs the compile step too (e.g. inside the Vitis AI image); here the stand-in compiler is
    on the PATH but the board's arch.json (an image path) is not on this machine: exit 3, the fix named."""
    stand_in = Path(__file__).resolve().parents[2] / "scripts" / "stand-in-image"
    env = {**fake_nndct_env, "PATH": f"{stand_in}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "vai", "--no-evaluate", "--compile", "zcu104"),
                       env=env)
    assert proc.returncode == 3, proc.stderr
    assert "no arch file /opt/vitis_ai/compiler/arch/DPUCZDX8G/ZCU104/arch.json for board zcu104" in proc.stderr
    assert "--arch FILE" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_the_local_payload_runs_with_the_planned_threads(tmp_path, unet_inputs):
    """Issue 25: passive waiting and the planned (or given) thread count reach the payload, and run.json says so."""
    out = tmp_path / "out"
    proc = run_hostctl(tiny_args(unet_inputs, out, "--quantizer", "portable", "--no-evaluate", "--threads", "1"),
                       env={"OMP_WAIT_POLICY": "", "OMP_NUM_THREADS": ""})
    assert proc.returncode == 0, proc.stderr
    run = manifest(out)
    assert run["runtime"]["threads"]["environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert run["payload"]["versions"]["torch_threads"] == "1"
    assert run["payload"]["versions"]["omp_wait_policy"] == "PASSIVE"
    # without --threads, a thread count set in the user's own environment is kept
    out2 = tmp_path / "out2"
    proc = run_hostctl(tiny_args(unet_inputs, out2, "--quantizer", "portable", "--no-evaluate"),
                       env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert manifest(out2)["payload"]["versions"]["torch_threads"] == "2"
    # --cpus is the container's: one line, exit 2
    proc = run_hostctl(tiny_args(unet_inputs, tmp_path / "out3", "--cpus", "1"))
    assert proc.returncode == 2 and "--cpus applies to --runtime docker only" in proc.stderr
