"""hostctl compile and quantize --compile against the real engine and the stand-in image's vai_c_xir.

The stand-in compiler (scripts/stand-in-image/vai_c_xir) is steered by markers in the input xmodel's bytes:
`stand-in:dpu_subgraphs=N`, `stand-in:fail=1`, `stand-in:sleep=S`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from docker_helpers import caller, fake_nndct_requirements, hostctl_containers, run_as
from helpers import run_hostctl, tiny_args, tree_snapshot

pytestmark = pytest.mark.docker

KV260 = "DPUCZDX8G_ISA1_B4096"


def quantized(directory: Path, *marks: str, name: str = "Unet") -> Path:
    """A stand-in for quantize's output directory holding <name>_int.xmodel with the given markers."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}_int.xmodel").write_bytes(b"\x08\x01FAKE " + " ".join(marks).encode() + b"\x00")
    return directory


def compile_args(image: str, input_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["compile", "--input-dir", str(input_dir), "--output-dir", str(out), "--image", image, "--pull", "never",
            *extra]


def test_compile_for_the_default_board(tmp_path, stand_in_image, docker_client):
    out = tmp_path / "compiled"
    proc = run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "q"), out, "--json"))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"Unet.xmodel", "meta.json", "md5sum.txt", "compile.json", "run.json",
                                               "run.log"}
    report = json.loads((out / "compile.json").read_text())
    assert (report["target"], report["device_subgraphs"], report["dpu_subgraphs"], report["cpu_ops"]) == \
        (KV260, 2, 1, [])
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["verb"] == "compile"
    assert manifest["compile"]["dpu_subgraphs"] == 1 and manifest["runtime"]["image"] == stand_in_image
    assert json.loads(proc.stdout)["report"]["target"] == KV260
    assert "-a /opt/vitis_ai/compiler/arch/DPUCZDX8G/KV260/arch.json" in (out / "run.log").read_text()
    assert "warning:" not in proc.stderr
    assert (out / "md5sum.txt").read_text().split()[0] in (out / "run.log").read_text()


def test_several_dpu_subgraphs_give_the_table_and_one_warning_line(tmp_path, stand_in_image):
    out = tmp_path / "compiled"
    proc = run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "q", "stand-in:dpu_subgraphs=3"), out,
                                    "--net-name", "deploy"), env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "compile.json").read_text())
    assert report["dpu_subgraphs"] == 3 and report["device_subgraphs"] == 6
    assert report["cpu_ops"] == ["Unet__Unet__Upsample_up1__input_1", "Unet__Unet__Upsample_up2__input_2"]
    assert report["cpu_op_details"][0]["reason"] == "[upsample-fix] mode is not supported."
    assert report["warnings"] and "3 DPU subgraphs" in report["warnings"][0]
    assert (out / "deploy.xmodel").is_file(), "--net-name names the compiled model"
    assert "3 DPU subgraph(s), 2 op(s) on the CPU" in proc.stderr
    assert "Unet__Unet__Upsample_up1__input_1" in proc.stderr and "upsample-fix" in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "3 DPU subgraphs" in warnings[0] and "accept exactly one" in warnings[0]


@pytest.mark.parametrize("how,expected,arch_in_log", [
    (["--board", "zcu104"], "DPUCZDX8G_ISA1_B4096", "/opt/vitis_ai/compiler/arch/DPUCZDX8G/ZCU104/arch.json"),
    (["--board", "vck190"], "DPUCVDX8G_ISA3_C32B6", "/opt/vitis_ai/compiler/arch/DPUCVDX8G/VCK190/arch.json"),
    (["--board", "v70"], "DPUCV2DX8G_ISA1_C20B14", "/opt/vitis_ai/compiler/arch/DPUCV2DX8G/V70/arch.json"),
    (["--arch", "USER_ARCH"], "DPUCZDX8G_ISA1_B1024", "/hostctl/arch/arch.json"),
    (["--fingerprint", "0x101000016010407"], "0x101000016010407", "/hostctl/run/arch.json"),
])
def test_board_arch_and_fingerprint_resolution(tmp_path, stand_in_image, how, expected, arch_in_log):
    user_arch = tmp_path / "my board" / "arch.json"
    user_arch.parent.mkdir()
    user_arch.write_text(json.dumps({"target": "DPUCZDX8G_ISA1_B1024"}))
    how = [str(user_arch) if a == "USER_ARCH" else a for a in how]
    out = tmp_path / "compiled"
    proc = run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "q"), out, *how))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "compile.json").read_text())["target"] == expected
    assert f"-a {arch_in_log}" in (out / "run.log").read_text()
    if how[0] == "--fingerprint":
        assert json.loads((out / "arch.json").read_text()) == {"fingerprint": "0x101000016010407"}
    assert json.loads(user_arch.read_text()) == {"target": "DPUCZDX8G_ISA1_B1024"}, "mounted read-only"


def test_default_output_dir_is_named_after_the_board(tmp_path, stand_in_image):
    quantized(tmp_path / "deployment" / "deployment_artifacts" / "quantization_results")
    proc = run_hostctl(["compile", "--board", "zcu102", "--image", stand_in_image, "--pull", "never"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "deployment" / "deployment_artifacts" / "compiled_zcu102" / "Unet.xmodel").is_file()


def test_failing_compile_exits_1_with_the_compilers_last_lines_and_keeps_earlier_results(tmp_path, stand_in_image):
    out = tmp_path / "compiled"
    assert run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "good"), out)).returncode == 0
    before = tree_snapshot(out)
    proc = run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "bad", "stand-in:fail=1"), out))
    assert proc.returncode == 1, proc.stderr
    assert "error: the compile failed: vai_c_xir exited with status 1" in proc.stderr
    assert "[UNILOG][FATAL][XCOM_PM_FAIL]" in proc.stderr and "Begin to compile..." in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_snapshot(out) == before, "a failed compile must not touch the previous results"
    failed = list(tmp_path.glob("compiled.failed-*"))
    assert len(failed) == 1 and json.loads((failed[0] / "run.json").read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def image_without(docker_client, stand_in_image):
    """Build (once per removal) a stand-in image with a path removed; remove the images afterwards."""
    built: list[str] = []

    def build(path: str) -> str:
        tag = f"hostctl-test-without:{uuid.uuid4().hex[:8]}"
        dockerfile = f"FROM {stand_in_image}\nRUN rm -rf {path}\n".encode()
        docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, network_mode="none", rm=True,
                                   forcerm=True)
        built.append(tag)
        return tag

    yield build
    for tag in built:
        docker_client.images.remove(tag, force=True)


def test_missing_compiler_is_exit_3_with_the_fix(tmp_path, image_without):
    image = image_without("/opt/vitis_ai/conda/envs/vitis-ai-wego-torch2/bin/vai_c_xir")
    out = tmp_path / "compiled"
    proc = run_hostctl(compile_args(image, quantized(tmp_path / "q"), out))
    assert proc.returncode == 3, proc.stderr
    assert "error: the image has no compiler: vai_c_xir is not on the PATH" in proc.stderr
    assert "--image" in proc.stderr and "--conda-env" in proc.stderr
    assert not out.exists()


def test_missing_arch_file_is_exit_3_with_the_fix(tmp_path, image_without):
    image = image_without("/opt/vitis_ai/compiler/arch/DPUCV2DX8G")
    proc = run_hostctl(compile_args(image, quantized(tmp_path / "q"), tmp_path / "compiled", "--board", "vek280"))
    assert proc.returncode == 3, proc.stderr
    assert "no arch file /opt/vitis_ai/compiler/arch/DPUCV2DX8G/VEK280/arch.json for board vek280" in proc.stderr
    assert "--arch FILE" in proc.stderr


def test_ctrl_c_during_compile_stops_and_removes_the_container(tmp_path, stand_in_image, docker_client):
    out = tmp_path / "compiled"
    args = compile_args(stand_in_image, quantized(tmp_path / "q", "stand-in:sleep=120"), out)
    proc = subprocess.Popen([sys.executable, "-m", "hostctl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, COLUMNS="200"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = list(tmp_path.glob(".compiled.hostctl-tmp-*/run.log"))
            if logs and "Begin to compile" in logs[0].read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the compiler never started")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 15
    assert "interrupted by SIGINT" in stderr
    assert not hostctl_containers(docker_client)
    assert not out.exists()


def test_quantize_then_compile_in_one_run(tmp_path, stand_in_image, unet_inputs):
    """The fake nndct (installed through --requirements) exports the xmodel; the same container compiles it."""
    requirements = fake_nndct_requirements(tmp_path)
    out = tmp_path / "out"
    args = tiny_args(unet_inputs, out, "--image", stand_in_image, "--pull", "never", "--requirements",
                     str(requirements), "--no-evaluate", "--compile", "kv260", "--json")
    args[args.index("--runtime") + 1] = "docker"
    proc = run_hostctl(args, env={"HOSTCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    compiled = out / "compiled_kv260"
    assert {p.name for p in compiled.iterdir()} == {"Unet.xmodel", "meta.json", "md5sum.txt", "compile.json"}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["payload"]["backend"] == "hybrid" and manifest["payload"]["check"]["passed"] is True  # auto
    assert manifest["compile"]["target"] == KV260 and manifest["compile"]["dpu_subgraphs"] == 1
    assert "compile" in manifest["payload"]["timings"]
    assert json.loads(proc.stdout)["compile"]["target"] == KV260
    assert "Compiled for DPUCZDX8G_ISA1_B4096: 1 DPU subgraph(s)" in proc.stderr


def test_quantize_compile_without_an_xmodel_says_why_it_skipped(tmp_path, stand_in_image, unet_inputs):
    out = tmp_path / "out"
    args = tiny_args(unet_inputs, out, "--image", stand_in_image, "--pull", "never", "--no-evaluate",
                     "--compile", "kv260")
    args[args.index("--runtime") + 1] = "docker"
    proc = run_hostctl(args)
    assert proc.returncode == 0, proc.stderr
    assert "--compile skipped: no xmodel was exported" in proc.stderr
    assert "skipped" in json.loads((out / "run.json").read_text())["compile"]
    assert not (out / "compiled_kv260").exists()


def test_compile_and_quantize_compile_as_a_non_root_caller(stand_in_image, unet_inputs):
    import grp

    socket_group = grp.getgrgid(os.stat("/var/run/docker.sock").st_gid).gr_name if os.getuid() == 0 else None
    with caller([socket_group] if socket_group else []) as (uid, gid, home):
        inputs = home / "in"
        inputs.mkdir()
        for path in (unet_inputs.state_dict, unet_inputs.samples):
            (inputs / path.name).write_bytes(path.read_bytes())
        requirements = fake_nndct_requirements(home)
        for path in [home, *home.rglob("*")]:
            os.chown(path, uid, gid)
        args = ["quantize", "--runtime", "docker", "--input-dir", str(inputs), "--output-dir", str(home / "out"),
                "--input-size", "3", "32", "32", "--num-classes", "3", "--calib-batch-size", "4",
                "--model-arg=width=4", "--model-arg=depth=2", "--image", stand_in_image, "--pull", "never",
                "--requirements", str(requirements), "--no-evaluate", "--compile", "kv260"]
        proc = run_as(uid, gid, home, args)
        assert proc.returncode == 0, proc.stderr
        proc = run_as(uid, gid, home, ["compile", "--input-dir", str(home / "out"), "--output-dir",
                                       str(home / "compiled"), "--image", stand_in_image, "--pull", "never"])
        assert proc.returncode == 0, proc.stderr
        for out in (home / "out", home / "compiled"):
            owners = {(p.stat().st_uid, p.stat().st_gid) for p in [out, *out.rglob("*")]}
            assert owners == {(uid, gid)}, (out, owners)
        assert (home / "out" / "compiled_kv260" / "Unet.xmodel").is_file()
        assert (home / "compiled" / "Unet.xmodel").is_file()


def test_compile_on_a_remote_engine_copies_files_in_and_out(tmp_path, stand_in_image):
    """HOSTCTL_DOCKER_FILES=copy is how a remote engine gets its files; the user's arch.json is a single file."""
    user_arch = tmp_path / "arch.json"
    user_arch.write_text(json.dumps({"target": "DPUCZDX8G_ISA1_B1024"}))
    out = tmp_path / "compiled"
    proc = run_hostctl(compile_args(stand_in_image, quantized(tmp_path / "q", "stand-in:dpu_subgraphs=2"), out,
                                    "--arch", str(user_arch)), env={"HOSTCTL_DOCKER_FILES": "copy"})
    assert proc.returncode == 0, proc.stderr
    assert "is remote: inputs are copied" in proc.stderr
    report = json.loads((out / "compile.json").read_text())
    assert (report["target"], report["dpu_subgraphs"]) == ("DPUCZDX8G_ISA1_B1024", 2)
    assert {"Unet.xmodel", "meta.json", "md5sum.txt"} <= {p.name for p in out.iterdir()}
