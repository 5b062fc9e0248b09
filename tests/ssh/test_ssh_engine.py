"""hostctl against an engine reached over ssh:// (a real sshd on loopback, the real engine behind it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from docker_helpers import hostctl_containers, user_model
from helpers import USER_MODELS, make_inputs, run_hostctl, tiny_args, tree_snapshot

pytestmark = pytest.mark.docker


def docker_args(inputs, out, image, *extra):
    args = tiny_args(inputs, out, "--quantizer", "portable", "--image", image, "--pull", "never", *extra)
    args[args.index("--runtime") + 1] = "docker"
    return args


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_quantize_over_ssh_gives_what_a_local_run_gives(tmp_path, unet_inputs, stand_in_image, sshd):
    # one thread on both sides: float sums are the same bits only at the same thread count, and the thread plan
    # counts the CPUs busy when each run starts (CI saw 1 ulp of difference in the float predictions without it)
    local = run_hostctl(docker_args(unet_inputs, tmp_path / "ssh-local", stand_in_image, "--no-evaluate",
                                    "--threads", "1"))
    assert local.returncode == 0, local.stderr
    logins_before = sshd.log.read_text().count("Accepted publickey")
    remote = run_hostctl(docker_args(unet_inputs, tmp_path / "ssh-remote", stand_in_image, "--no-evaluate", "--json",
                                     "--threads", "1"), env=sshd.client_env())
    assert remote.returncode == 0, remote.stderr
    # one key exchange for the whole run: every other connection is a session multiplexed over the first
    assert sshd.log.read_text().count("Accepted publickey") - logins_before == 1
    assert f"engine at {sshd.url} is remote" in remote.stderr
    assert json.loads(remote.stdout)["status"] == "succeeded"
    for name in ("quant_info.json",):
        assert (tmp_path / "ssh-remote" / name).read_bytes() == (tmp_path / "ssh-local" / name).read_bytes()
    for name in ("quantization_test_preds.h5", "float_test_preds.h5"):
        got, want = h5_arrays(tmp_path / "ssh-remote" / name), h5_arrays(tmp_path / "ssh-local" / name)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (tmp_path / "ssh-remote").rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}
    manifest = json.loads((tmp_path / "ssh-remote" / "run.json").read_text())
    assert manifest["status"] == "succeeded"


def test_doctor_over_ssh_reports_the_remote_engine(stand_in_image, sshd):
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"], env=sshd.client_env())
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert findings["engine"]["ok"], findings["engine"]
    assert sshd.url in findings["engine"]["detail"]
    assert "round trip" in findings["engine"]["detail"]
    assert findings["image"]["ok"]
    assert "free on the engine" in findings["engine disk"]["detail"]
    # the payload's threads follow the engine's CPUs, not this machine's load (ssh's own work beside it)
    cpus = findings["container resources"]["detail"].split(" CPU(s)")[0]
    assert f"would run {cpus} thread(s) now ({cpus} CPU(s) usable on the remote engine" in \
        findings["container resources"]["detail"]


def _failure(server, tmp_path, unet_inputs, image, **env):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "ssh-out", image), env=server.client_env(**env), timeout=120)
    print(proc.stderr)
    assert proc.returncode == 3, proc.stderr
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    assert not (tmp_path / "ssh-out").exists()
    return proc.stderr


def test_wrong_key_is_one_line_with_the_fix(tmp_path, unet_inputs, stand_in_image, own_sshd):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    own_sshd.write_client_config(other)
    stderr = _failure(own_sshd, tmp_path, unet_inputs, stand_in_image)
    assert "Permission denied (publickey)" in stderr
    assert "ssh-add" in stderr and "IdentityFile" in stderr


def test_unknown_host_key_is_one_line_with_the_fix(tmp_path, unet_inputs, stand_in_image, own_sshd):
    own_sshd.known_hosts.write_text("")
    stderr = _failure(own_sshd, tmp_path, unet_inputs, stand_in_image)
    assert "Host key verification failed" in stderr
    hint = f"ssh -p {own_sshd.port} {own_sshd.user}@127.0.0.1 true"
    assert hint in stderr
    # The hint's command is what fixes it: once the key is accepted into known_hosts, hostctl gets through.
    accept = subprocess.run(["ssh", "-o", "StrictHostKeyChecking=accept-new", *hint.split()[1:]],
                            env=dict(os.environ, **own_sshd.client_env()), capture_output=True, text=True, timeout=60)
    assert accept.returncode == 0, accept.stderr
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"], env=own_sshd.client_env())
    assert {f["check"]: f for f in json.loads(proc.stdout)}["engine"]["ok"]


def test_refused_port_is_one_line_with_the_fix(tmp_path, unet_inputs, stand_in_image, own_sshd):
    own_sshd.stop()
    stderr = _failure(own_sshd, tmp_path, unet_inputs, stand_in_image)
    assert "Connection refused" in stderr
    assert f"port {own_sshd.port}" in stderr


def test_missing_ssh_is_one_line_with_the_fix(tmp_path, unet_inputs, stand_in_image, sshd):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    stderr = _failure(sshd, tmp_path, unet_inputs, stand_in_image, PATH=str(empty))
    assert "no `ssh` command on PATH" in stderr and "openssh-client" in stderr


def _calibrating(tmp_path: Path, image: str, env: dict[str, str],
                 docker_client) -> tuple[subprocess.Popen, Path, dict[str, bytes], Any]:
    """A slow quantize over ssh into an output directory with earlier results, caught mid-calibration: its
    process, the output directory, what that held before, and the one container running for it."""
    out = tmp_path / "ssh-out"
    before = _earlier_results(out)
    proc = _start_slow_run(tmp_path, out, image, env)
    _wait_for_calibration(tmp_path)
    [container] = _running(docker_client, proc.pid)
    assert container.status == "running"
    return proc, out, before, container


def _start_slow_run(tmp_path: Path, out: Path, image: str, env: dict[str, str]) -> subprocess.Popen:
    inputs = make_inputs(tmp_path / "in", user_model("Slow"), n_calib=200, n_test=2)
    args = docker_args(inputs, out, image, "--model", "misbehaving:Slow", "--model-path", str(USER_MODELS),
                       "--model-arg", "delay=0.4", "--calib-batch-size", "1", "--no-evaluate")
    full_env = dict(os.environ, COLUMNS="200", **env)
    from helpers import source_path

    full_env["PYTHONPATH"] = source_path(full_env.get("PYTHONPATH"))
    # Its own process group, as a shell gives a command: Ctrl-C in a terminal reaches the whole group.
    return subprocess.Popen([sys.executable, "-m", "hostctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, start_new_session=True)


def _wait_for_calibration(tmp_path: Path, deadline: float = 180.0) -> None:
    """The host writes the payload's lines to run.log as they arrive (over ssh, the results come at the end)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for log in tmp_path.glob(".ssh-out.hostctl-tmp-*/run.log"):
            if "calibration" in log.read_text(errors="replace"):
                time.sleep(2.0)
                return
        time.sleep(0.2)
    raise AssertionError("the run never reached calibration")


def _earlier_results(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "run.json").write_text('{"status": "succeeded", "written": ["run.json", "quant_info.json"]}')
    (out / "quant_info.json").write_text('{"param": {"earlier": [[8, 4]]}}')
    return tree_snapshot(out)


def _running(docker_client, pid: int) -> list:
    return [c for c in hostctl_containers(docker_client) if c.labels.get("hostctl.pid") == str(pid)]


def kill_sessions_and_check(proc: subprocess.Popen, sshd) -> tuple[str, float]:
    """Kill the sshd children serving a run: it must exit 1 within 30 s with one line. (stderr, when cut)"""
    killed = sshd.kill_sessions()
    cut = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - cut
    print(f"killed {len(killed)} sshd session(s): exit {proc.returncode} after {took:.1f} s\n{stderr[-600:]}")
    assert proc.returncode == 1, stderr
    assert took < 30
    errors = error_lines(stderr)
    assert len(errors) == 1 and "lost the connection to the Docker engine" in errors[0], stderr
    return stderr, cut


def test_killed_ssh_session_mid_calibration(tmp_path, stand_in_image, docker_client, own_sshd):
    """The sshd children serving hostctl die: exit 1 within 30 s, one line, earlier results intact, no container."""
    proc, out, before, _ = _calibrating(tmp_path, stand_in_image, own_sshd.client_env(), docker_client)
    kill_sessions_and_check(proc, own_sshd)
    assert tree_snapshot(out) == before
    deadline = time.monotonic() + 60
    while _running(docker_client, proc.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert _running(docker_client, proc.pid) == []


def test_frozen_link_ends_the_run_and_the_lease_stops_the_container(tmp_path, stand_in_image, docker_client,
                                                                    own_sshd):
    """The link goes silent (sessions frozen) and the host cannot reconnect (sshd gone): hostctl exits 1 within
    30 s; the container, which nobody can reach to stop, stops by itself within 60 s; `hostctl clean` over ssh
    removes it once the engine answers again."""
    proc, out, before, container = _calibrating(tmp_path, stand_in_image, own_sshd.client_env(), docker_client)
    sessions = own_sshd.sessions()
    for pid in sessions:
        os.kill(pid, signal.SIGSTOP)  # no more bytes either way, no FIN or RST: a link that went silent
    assert own_sshd.proc is not None
    own_sshd.proc.kill()  # no new connection can be made either
    own_sshd.proc.wait()
    cut = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - cut
        print(f"exit {proc.returncode} after {took:.1f} s\n{stderr[-600:]}")
        assert proc.returncode == 1, stderr
        assert took < 30
        assert len(error_lines(stderr)) == 1 and "lost the connection" in stderr
        assert "stops by itself" in stderr
        assert tree_snapshot(out) == before
        while time.monotonic() - cut < 60:
            container.reload()
            if container.status != "running":
                break
            time.sleep(1)
        stopped = time.monotonic() - cut
        print(f"container {container.status} {stopped:.1f} s after the link went silent")
        assert container.status == "exited"
        assert "no heartbeat from the host" in container.logs().decode(errors="replace")
    finally:
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    own_sshd.start_again()
    cleaned = run_hostctl(["clean", "--output-dir", str(out)], env=own_sshd.client_env(), cwd=tmp_path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert container.short_id in cleaned.stdout + cleaned.stderr
    assert container.id not in {c.id for c in hostctl_containers(docker_client)}


def test_a_docker_context_with_an_ssh_endpoint(tmp_path, stand_in_image, sshd):
    """The README's `docker context create NAME --docker host=ssh://...`, then `docker context use NAME`."""
    env = dict(os.environ, **sshd.client_env(), DOCKER_CONFIG=str(tmp_path / "docker-config"))
    env.pop("DOCKER_HOST")
    for command in (["create", "hostctl-test", "--docker", f"host={sshd.url}"], ["use", "hostctl-test"]):
        done = subprocess.run(["docker", "context", *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    logins_before = sshd.log.read_text().count("Accepted publickey")
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"],
                       env=dict(sshd.client_env(), DOCKER_HOST="", DOCKER_CONFIG=env["DOCKER_CONFIG"]))
    engine = {f["check"]: f for f in json.loads(proc.stdout)}["engine"]
    assert engine["ok"], engine
    assert f"{sshd.url} (context hostctl-test)" in engine["detail"]
    # the entry point found the context's endpoint too: its early login is the one login (hostctl/ssh_login.py)
    assert sshd.log.read_text().count("Accepted publickey") - logins_before == 1


def test_compile_over_ssh(tmp_path, stand_in_image, sshd):
    quantized = tmp_path / "q"
    quantized.mkdir()
    (quantized / "Unet_int.xmodel").write_bytes(b"\x08\x01FAKE stand-in:dpu_subgraphs=2\x00")
    out = tmp_path / "ssh-compiled"
    proc = run_hostctl(["compile", "--input-dir", str(quantized), "--output-dir", str(out), "--image",
                        stand_in_image, "--pull", "never"], env=sshd.client_env())
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "compile.json").read_text())
    assert (report["target"], report["dpu_subgraphs"]) == ("DPUCZDX8G_ISA1_B4096", 2)
    assert {"Unet.xmodel", "meta.json", "md5sum.txt"} <= {p.name for p in out.iterdir()}
    assert {p.stat().st_uid for p in out.rglob("*")} == {os.getuid()}


def test_ctrl_c_over_ssh_behaves_as_locally(tmp_path, stand_in_image, docker_client, sshd):
    proc, out, before, _ = _calibrating(tmp_path, stand_in_image, sshd.client_env(), docker_client)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: hostctl and every child in its group
    _, stderr = proc.communicate(timeout=60)
    print(f"SIGINT over ssh: exit {proc.returncode} after {time.monotonic() - started:.1f} s")
    assert proc.returncode == 130, stderr
    assert _running(docker_client, proc.pid) == []
    assert tree_snapshot(out) == before


def test_inspect_over_ssh_with_requirements(tmp_path, stand_in_image, sshd):
    """inspect --runtime docker: the requirements container and the inspector, both in copy mode over ssh."""
    from docker_helpers import fake_nndct_requirements
    from test_inspect_docker import NET, _args

    models = tmp_path / "models"
    models.mkdir()
    (models / "net.py").write_text(NET)
    requirements = fake_nndct_requirements(tmp_path)
    out = tmp_path / "ssh-inspect"
    proc = run_hostctl(_args(models, out, "--runtime", "docker", "--image", stand_in_image, "--pull", "never",
                             "--requirements", str(requirements)),
                       env=sshd.client_env(HOSTCTL_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="80"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "inspect.json").read_text())
    assert report["engine"] == {"name": "vai_q_pytorch Inspector", "version": "3.5.0+fake"}
    assert report["summary"]["dpu_subgraphs"] == 2
    assert (out / "inspect_DPUCZDX8G_ISA1_B4096.txt").is_file()
    assert {p.stat().st_uid for p in out.rglob("*")} == {os.getuid()}


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a user")
def test_a_workstation_user_without_docker_gets_files_owned_by_them(stand_in_image, sshd):
    """The remote-engine user: no docker group here, only an ssh key for the engine's machine."""
    import shutil

    from docker_helpers import caller, run_as
    from helpers import tiny_unet

    with caller([]) as (uid, gid, home):
        keys = home / "keys"
        keys.mkdir()
        shutil.copy(sshd.client_key, keys / "id_ed25519")
        shutil.copy(sshd.known_hosts, keys / "known_hosts")
        (keys / "config").write_text(f"Host *\n  IdentityFile {keys / 'id_ed25519'}\n  IdentitiesOnly yes\n"
                                     f"  UserKnownHostsFile {keys / 'known_hosts'}\n  StrictHostKeyChecking yes\n")
        (home / "bin").mkdir()
        (home / "bin" / "ssh").write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {keys / "config"} "$@"\n')
        (home / "bin" / "ssh").chmod(0o755)
        inputs = make_inputs(home / "in", tiny_unet())
        for path in [home, *home.rglob("*")]:
            os.chown(path, uid, gid)
        (keys / "id_ed25519").chmod(0o600)
        out = home / "ssh-results"
        proc = run_as(uid, gid, home, docker_args(inputs, out, stand_in_image, "--no-evaluate"),
                      PATH=f"{home / 'bin'}:{os.environ['PATH']}", DOCKER_HOST=sshd.url)
        assert proc.returncode == 0, proc.stderr
        owners = {str(p.relative_to(out)): (p.stat().st_uid, p.stat().st_gid) for p in [out, *out.rglob("*")]}
        print(f"caller {uid}:{gid} over {sshd.url}; owners: {sorted(set(owners.values()))}")
        assert set(owners.values()) == {(uid, gid)}, owners
        assert {"quant_info.json", "quantization_test_preds.h5", "run.log"} <= set(owners)
