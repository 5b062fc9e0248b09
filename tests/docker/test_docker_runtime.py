"""hostctl quantize --runtime docker against the real engine and the stand-in image."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from docker_helpers import fake_nndct_requirements, hostctl_containers, user_model
from helpers import USER_MODELS, make_inputs, run_hostctl, tiny_args, tiny_unet, tree_snapshot

pytestmark = pytest.mark.docker


def docker_args(inputs, out, image, *extra):
    args = tiny_args(inputs, out, "--quantizer", "portable", "--image", image, "--pull", "never", *extra)
    args[args.index("--runtime") + 1] = "docker"
    return args


# "copy" is how a remote engine gets its files (put_archive / get_archive); forced here on the local engine.
FILE_MODES = {"bind": {}, "copy": {"HOSTCTL_DOCKER_FILES": "copy"}}


@pytest.mark.parametrize("files", list(FILE_MODES))
def test_full_run_with_the_portable_backend(tmp_path, unet_inputs, stand_in_image, docker_client, files):
    out = tmp_path / "out"
    proc = run_hostctl(docker_args(unet_inputs, out, stand_in_image, "--json"), env=FILE_MODES[files])
    assert proc.returncode == 0, proc.stderr
    files = {p.name for p in out.iterdir()}
    assert {"quant_info.json", "quantization_test_preds.h5", "float_test_preds.h5", "run.json", "run.log",
            "metrics.json", "report"} <= files
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["runtime"]["image_id"] == docker_client.images.get(stand_in_image).id
    assert manifest["payload"]["versions"]["torch"].startswith("1.13"), "the stand-in runs Debian's torch 1.13"
    info = json.loads((out / "quant_info.json").read_text())
    assert info["param"] and all(k.startswith("Unet::") for k in info["param"])
    assert json.loads(proc.stdout)["status"] == "succeeded"
    assert "model Unet" in (out / "run.log").read_text(), "run.log is the host's, never replaced by a copy"


def run_in_payload_container(tmp_path: Path, image: str, script: str) -> tuple[int, list[tuple[str, str]]]:
    """Run a Python script exactly where the payload would run (same shim, mounts, env); (exit code, lines)."""
    from hostctl.options import QuantizeOptions
    from hostctl.runtime.docker import DockerRuntime, shim
    from hostctl.signals import SignalTrap
    from hostctl.ui import Reporter

    inputs = make_inputs(tmp_path / "in", tiny_unet())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    opts = QuantizeOptions(input_dir=inputs.dir, output_dir=tmp_path / "out", image=image, pull="never")
    runtime = DockerRuntime(opts, run_dir, Reporter(quiet=True), SignalTrap())
    runtime.prepare()
    lines: list[tuple[str, str]] = []
    code = runtime._run_container(shim(["python", "-c", script]), runtime._shares(), runtime._environment(),
                                  "payload", network=False, on_line=lambda s, t: lines.append((s, t)))
    return code, lines


@pytest.mark.parametrize("code", [0, 1, 2, 42])
def test_exit_code_of_the_payload_is_the_containers(tmp_path, stand_in_image, code):
    got, lines = run_in_payload_container(tmp_path, stand_in_image,
                                          f"import sys; print('about to exit'); sys.exit({code})")
    assert got == code
    assert ("stdout", "about to exit") in lines


def test_payload_exit_42_fails_the_run_with_its_log(tmp_path, stand_in_image):
    inputs = make_inputs(tmp_path / "in", user_model("ExitsWith", code=42))
    out = tmp_path / "out"
    proc = run_hostctl(docker_args(inputs, out, stand_in_image, "--model", "misbehaving:ExitsWith",
                                   "--model-path", str(USER_MODELS), "--model-arg", "code=42"))
    assert proc.returncode == 1, proc.stderr
    assert "the payload exited with status 42" in proc.stderr
    assert "exiting with 42 as asked" in proc.stderr, "the last lines of the payload's log belong in the error"
    assert not out.exists()


def test_utf8_split_across_frames_and_last_line_without_newline(tmp_path, stand_in_image):
    # Write one multi-byte character a byte at a time, each a separate write() and so a separate frame.
    script = (
        "import sys, time\n"
        "w = sys.stdout.buffer\n"
        "for b in 'café ✓ 日本\\n'.encode():\n"
        "    w.write(bytes([b])); w.flush(); time.sleep(0.01)\n"
        "sys.stderr.buffer.write('erreur é\\n'.encode()); sys.stderr.flush()\n"
        "w.write('progress 10%\\rprogress 100%\\nno newline at the end ✓'.encode()); w.flush()\n"
    )
    code, lines = run_in_payload_container(tmp_path, stand_in_image, script)
    assert code == 0
    assert [t for s, t in lines if s == "stdout"] == ["café ✓ 日本", "progress 100%", "no newline at the end ✓"]
    assert [t for s, t in lines if s == "stderr"] == ["erreur é"]


def _start_slow_docker_run(tmp_path: Path, out: Path, image: str, delay: float = 0.4) -> subprocess.Popen:
    inputs = make_inputs(tmp_path / "in", user_model("Slow"), n_calib=60, n_test=2)
    args = docker_args(inputs, out, image, "--model", "misbehaving:Slow", "--model-path", str(USER_MODELS),
                       "--model-arg", f"delay={delay}", "--calib-batch-size", "1", "--no-evaluate")
    return subprocess.Popen([sys.executable, "-m", "hostctl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, COLUMNS="200"))


def _wait_for_calibration(tmp_path: Path, deadline: float = 180.0) -> Path:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for log in tmp_path.glob(".out.hostctl-tmp-*/run.log"):
            if (log.parent / "float_test_preds.h5").exists() and "calibration" in log.read_text(errors="replace"):
                time.sleep(1.5)
                return log.parent
        time.sleep(0.1)
    raise AssertionError("the run never reached calibration")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_calibration_leaves_no_container(tmp_path, stand_in_image, docker_client, sig, code):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json", "quant_info.json"]}')
    (out / "quant_info.json").write_text('{"param": {"earlier": [[8, 4]]}}')
    before = tree_snapshot(out)
    proc = _start_slow_docker_run(tmp_path, out, stand_in_image)
    _wait_for_calibration(tmp_path)
    running = [c for c in hostctl_containers(docker_client) if c.labels.get("hostctl.pid") == str(proc.pid)]
    assert len(running) == 1 and running[0].status == "running"
    started = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    print(f"{signal.Signals(sig).name}: exit {proc.returncode} after {time.monotonic() - started:.1f}s; "
          f"hostctl containers left: {len(hostctl_containers(docker_client))}")
    assert proc.returncode == code, stderr
    assert hostctl_containers(docker_client) == []
    assert tree_snapshot(out) == before


def test_second_ctrl_c_kills_at_once(tmp_path, stand_in_image, docker_client):
    out = tmp_path / "out"
    # A payload that ignores SIGTERM would otherwise hold the stop for the whole grace period.
    proc = _start_slow_docker_run(tmp_path, out, stand_in_image, delay=0.4)
    _wait_for_calibration(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert hostctl_containers(docker_client) == []


def test_kill_9_leftover_is_swept_by_the_next_run(tmp_path, stand_in_image, docker_client, unet_inputs):
    proc = _start_slow_docker_run(tmp_path, tmp_path / "out", stand_in_image)
    _wait_for_calibration(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    orphans = [c for c in hostctl_containers(docker_client) if c.labels.get("hostctl.pid") == str(proc.pid)]
    assert len(orphans) == 1, "kill -9 gives hostctl no chance to clean up"
    second = run_hostctl(docker_args(unet_inputs, tmp_path / "out2", stand_in_image, "--no-evaluate"))
    assert second.returncode == 0, second.stderr
    assert "removed 1 container(s) left behind" in second.stderr
    print(f"after kill -9: 1 leftover; after the next run: {len(hostctl_containers(docker_client))}")
    assert hostctl_containers(docker_client) == []


def test_two_runs_into_different_output_dirs_at_once(tmp_path, stand_in_image, unet_inputs):
    procs = [subprocess.Popen([sys.executable, "-m", "hostctl",
                               *docker_args(unet_inputs, tmp_path / f"out{i}", stand_in_image, "--no-evaluate")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    assert all((tmp_path / f"out{i}" / "quant_info.json").is_file() for i in range(2))


@pytest.mark.parametrize("files", list(FILE_MODES))
def test_requirements_are_installed_once_and_importable(tmp_path, stand_in_image, files):
    wheels = tmp_path / "req" / "wheels"
    pkg = tmp_path / "probe_src"
    (pkg / "hostctl_probe").mkdir(parents=True)
    (pkg / "hostctl_probe" / "__init__.py").write_text("MESSAGE = 'probe imported'\n")
    (pkg / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        '"setuptools.build_meta"\n[project]\nname = "hostctl-probe"\n'
                                        'version = "0.1"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(pkg)], check=True)
    requirements = tmp_path / "req" / "requirements.txt"
    requirements.write_text("--no-index\n--find-links wheels\nhostctl-probe==0.1\n")
    inputs = make_inputs(tmp_path / "in", user_model("NeedsProbe"))
    cache = tmp_path / "cache"
    env = {"HOSTCTL_CACHE_DIR": str(cache), **FILE_MODES[files]}
    extra = ["--model", "misbehaving:NeedsProbe", "--model-path", str(USER_MODELS), "--requirements",
             str(requirements), "--no-evaluate"]
    first = run_hostctl(docker_args(inputs, tmp_path / "out1", stand_in_image, *extra), env=env)
    assert first.returncode == 0, first.stderr
    assert "requirements: installing" in first.stderr and "Successfully installed hostctl-probe" in first.stderr
    assert "probe imported" in (tmp_path / "out1" / "run.log").read_text()
    markers = list(cache.glob("requirements/*/.complete"))
    assert len(markers) == 1
    stamp = markers[0].stat().st_mtime_ns
    second = run_hostctl(docker_args(inputs, tmp_path / "out2", stand_in_image, *extra), env=env)
    assert second.returncode == 0, second.stderr
    assert "requirements: using the cache" in second.stderr
    assert "installing" not in second.stderr and "Successfully installed" not in second.stderr
    assert markers[0].stat().st_mtime_ns == stamp
    assert "probe imported" in (tmp_path / "out2" / "run.log").read_text()


def test_requirements_that_replace_torch_are_refused(tmp_path, stand_in_image, unet_inputs):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\ntorch==2.3.0  # newer is better?\n")
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "out", stand_in_image, "--requirements",
                                   str(requirements)))
    assert proc.returncode == 2
    assert f"{requirements}:2: 'torch==2.3.0" in proc.stderr and "would replace the image's torch" in proc.stderr


def test_engine_down_is_one_line_and_exit_3(tmp_path, unet_inputs):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "out", "img"),
                       env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert proc.returncode == 3, proc.stderr
    assert "no Docker engine at unix://" in proc.stderr and "the socket does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_image_with_pull_never(tmp_path, unet_inputs):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "out", "hostctl-no-such-image:1"))
    assert proc.returncode == 3
    assert "image hostctl-no-such-image:1 is not on this machine and --pull never forbids pulling it" in proc.stderr


def test_pull_failure_is_an_environment_problem(tmp_path, unet_inputs):
    args = docker_args(unet_inputs, tmp_path / "out", "localhost:1/hostctl/no-such-image:1")
    args[args.index("--pull") + 1] = "missing"
    proc = run_hostctl(args)
    assert proc.returncode == 3, proc.stderr
    assert "pulling localhost:1/hostctl/no-such-image:1 failed" in proc.stderr


def test_keep_container_then_clean(tmp_path, stand_in_image, docker_client, unet_inputs):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "out", stand_in_image, "--keep-container",
                                   "--no-evaluate"))
    assert proc.returncode == 0, proc.stderr
    kept = [c for c in hostctl_containers(docker_client) if c.labels.get("hostctl.keep") == "1"]
    assert len(kept) == 1 and kept[0].status == "exited"
    dry = run_hostctl(["clean", "--dry-run", "--json"])
    assert dry.returncode == 0 and kept[0].short_id in dry.stdout
    assert len(hostctl_containers(docker_client)) == 1
    assert run_hostctl(["clean"]).returncode == 0
    assert hostctl_containers(docker_client) == []


def test_print_docker_cmd_is_runnable(tmp_path, stand_in_image, unet_inputs):
    out = tmp_path / "direct"
    proc = run_hostctl(docker_args(unet_inputs, out, stand_in_image, "--print-docker-cmd"))
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.strip()
    assert command.count("\n") == 0 and "docker run" in command
    ran = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert (out / "quant_info.json").is_file() and (out / "result.json").is_file()


def test_doctor_reports_engine_and_image(stand_in_image):
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"])
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert findings["engine"]["ok"] and findings["image"]["ok"] and findings["image platform"]["ok"]
    # what a container gets from this engine, and the threads the payload would run (issue 25)
    cpus = docker.from_env().info()["NCPU"]
    assert findings["container resources"]["detail"].startswith(f"{cpus} CPU(s), ")
    assert re.search(r"would run \d thread\(s\) now \(.*\), (spinning|waiting passively)$",
                     findings["container resources"]["detail"])
    missing = run_hostctl(["doctor", "--image", "hostctl-no-such-image:1", "--json"])
    assert missing.returncode == 3
    image = {f["check"]: f for f in json.loads(missing.stdout)}["image"]
    assert not image["ok"] and "docker pull hostctl-no-such-image:1" in image["fix"]


def test_engine_is_resolved_through_the_current_docker_context(tmp_path, unet_inputs, stand_in_image):
    """Like the docker CLI: with no DOCKER_HOST, the current context decides which engine is used."""
    config = tmp_path / "docker-config"
    good = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["DOCKER_CONFIG"] = str(config)
    for name, host in (("hostctl-broken", f"unix://{tmp_path}/nothing.sock"), ("hostctl-good", good)):
        subprocess.run(["docker", "context", "create", name, "--docker", f"host={host}"], env=env, check=True,
                       capture_output=True)
    subprocess.run(["docker", "context", "use", "hostctl-broken"], env=env, check=True, capture_output=True)
    args = docker_args(unet_inputs, tmp_path / "out", stand_in_image, "--no-evaluate")
    broken = subprocess.run([sys.executable, "-m", "hostctl", *args], env=env, capture_output=True, text=True)
    assert broken.returncode == 3
    assert f"{tmp_path}/nothing.sock (context hostctl-broken)" in broken.stderr
    subprocess.run(["docker", "context", "use", "hostctl-good"], env=env, check=True, capture_output=True)
    good_run = subprocess.run([sys.executable, "-m", "hostctl", *args], env=env, capture_output=True, text=True)
    assert good_run.returncode == 0, good_run.stderr


def test_out_of_memory_is_reported_as_such(tmp_path, stand_in_image, unet_inputs):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "out", stand_in_image, "--memory", "48m"))
    assert proc.returncode == 1, proc.stderr
    assert "the container ran out of memory (--memory 48m) and was killed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_portable_gives_the_same_fix_positions_on_torch_1_13_and_the_host_torch(tmp_path, stand_in_image):
    """The stand-in runs Debian's torch 1.13; the host runs a current torch. Same rules, same answer."""
    from helpers import TINY_SIZE

    sys.path.insert(0, str(USER_MODELS))
    try:
        import tinyseg
    finally:
        sys.path.remove(str(USER_MODELS))
    import torch

    torch.manual_seed(0)
    inputs = make_inputs(tmp_path / "in", tinyseg.TinySeg(), n_calib=12, size=TINY_SIZE)
    extra = ["--model", "tinyseg:TinySeg", "--model-path", str(USER_MODELS), "--no-evaluate"]
    local = run_hostctl(tiny_args(inputs, tmp_path / "local", "--quantizer", "portable", *extra))
    assert local.returncode == 0, local.stderr
    container = run_hostctl(docker_args(inputs, tmp_path / "container", stand_in_image, *extra))
    assert container.returncode == 0, container.stderr
    versions = {json.loads((tmp_path / d / "run.json").read_text())["payload"]["versions"]["torch"][:4]
                for d in ("local", "container")}
    assert len(versions) == 2, versions
    same = run_hostctl(["diff", str(tmp_path / "local"), str(tmp_path / "container"), "--exit-code", "--json"])
    assert same.returncode == 0, same.stdout
    assert json.loads(same.stdout)["identical"] is True


def test_fast_demo_through_the_container(tmp_path, stand_in_image):
    proc = run_hostctl(["demo", "--fast", "--runtime", "docker", "--image", stand_in_image, "--pull", "never",
                        "--output-dir", str(tmp_path / "demo"), "--json", "--compile", "kv260"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    manifest = json.loads((tmp_path / "demo" / "quantization_results" / "run.json").read_text())
    assert manifest["runtime"]["runtime"] == "docker" and manifest["runtime"]["image"] == stand_in_image
    assert summary["metrics"]["agreement"] > 0.9
    # The stand-in has no pytorch_nndct: auto picks portable, which exports no xmodel, and the compile says so.
    assert "skipped" in summary["compile"] and "--compile skipped" in proc.stderr


def test_demo_with_a_missing_image_fails_before_training(tmp_path):
    proc = run_hostctl(["demo", "--fast", "--runtime", "docker", "--image", "hostctl-no-such-image:1", "--pull",
                        "never", "--output-dir", str(tmp_path / "demo")])
    assert proc.returncode == 3
    assert "--pull never forbids pulling it" in proc.stderr
    assert not (tmp_path / "demo" / "dataset").exists(), "nothing should be generated or trained first"


def test_auto_picks_hybrid_in_the_container_where_pytorch_nndct_imports(tmp_path, stand_in_image, unet_inputs):
    """The fake nndct, installed into the image's env through --requirements, stands in for the real one."""
    requirements = fake_nndct_requirements(tmp_path)
    out = tmp_path / "out"
    args = docker_args(unet_inputs, out, stand_in_image, "--requirements", str(requirements), "--quant-opt", "0",
                       "--no-evaluate")
    args[args.index("--quantizer") + 1] = "auto"
    proc = run_hostctl(args, env={"HOSTCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    # auto is hybrid where nndct imports: nndct's test mode accepted the portable calibration and exported
    assert manifest["payload"]["backend"] == "hybrid" and manifest["payload"]["check"]["passed"] is True
    assert (out / "Unet_int.xmodel").is_file() and (out / "Unet.py").is_file()
    assert json.loads((out / "quant_info.json").read_text())["bias_corrected"] is False, "--quant-opt 0 reached nndct"
    assert "[VAIQ_NOTE]" in (out / "run.log").read_text()
