"""Inputs kept on a remote engine between runs (hostctl/runtime/docker/inputs.py), over a real sshd and engine."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker.types
import h5py
import pytest
from helpers import run_hostctl, source_path, tree_snapshot
from test_ssh_engine import _earlier_results, _running, docker_args, h5_arrays, kill_sessions_and_check

from hostctl.runtime.docker.inputs import LABEL_CACHE, LABEL_INPUTS, MARKER, content_key
from hostctl.runtime.docker.shim import PAYLOAD_DIR

pytestmark = pytest.mark.docker


def input_volumes(client, key: str | None = None) -> list:
    label = f"{LABEL_INPUTS}={key}" if key else f"{LABEL_CACHE}=inputs"
    return client.volumes.list(filters={"label": label})


@pytest.fixture(autouse=True)
def no_input_volumes(docker_client):
    """Each test starts and ends with no input volume on the engine."""
    for volume in input_volumes(docker_client):
        volume.remove(force=True)
    yield
    for volume in input_volumes(docker_client):
        volume.remove(force=True)


def quantize(unet_inputs, out, image, sshd, **env):
    proc = run_hostctl(docker_args(unet_inputs, out, image, "--no-evaluate", "--threads", "1"),
                       env=sshd.client_env(**env))
    assert proc.returncode == 0, proc.stderr
    return proc.stderr



def container_events(client, since: float) -> list[tuple[str, str]]:
    """(role, action) of hostctl's containers on the engine since `since`, in the engine's order."""
    events = client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                           filters={"type": "container", "label": "hostctl.run"})
    return [(e["Actor"]["Attributes"].get("hostctl.role", ""), e["Action"]) for e in events]


def test_inputs_are_copied_once_and_mounted_by_the_next_runs(tmp_path, unet_inputs, stand_in_image, docker_client,
                                                              sshd):
    key = content_key(unet_inputs.dir)
    since = time.time()
    first = quantize(unet_inputs, tmp_path / "ssh-first", stand_in_image, sshd)
    [volume] = input_volumes(docker_client, key)
    assert f"inputs kept on the engine in volume {volume.name}" in first
    # the new volume was filled by the payload's own container (mounted writable there), not by a helper
    assert {role for role, _ in container_events(docker_client, since)} == {"payload"}
    since = time.time()
    second = quantize(unet_inputs, tmp_path / "ssh-second", stand_in_image, sshd)
    assert f"inputs already on the engine (volume {volume.name}, same content): not copied" in second
    # the code is on the engine too: nothing is copied into the container before it starts
    events = container_events(docker_client, since)
    payload = [action for role, action in events if role == "payload" and action in ("create", "start",
                                                                                    "extract-to-dir")]
    assert payload[:2] == ["create", "start"] and "extract-to-dir" in payload, events
    assert ("inputs", "create") not in events and ("code", "create") not in events
    assert [v.name for v in input_volumes(docker_client)] == [volume.name]
    assert (tmp_path / "ssh-first" / "quant_info.json").read_bytes() == \
        (tmp_path / "ssh-second" / "quant_info.json").read_bytes()
    got, want = (h5_arrays(tmp_path / d / "quantization_test_preds.h5") for d in ("ssh-second", "ssh-first"))
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)

    # one sample changed: another content, copied again into a volume of its own
    changed = tmp_path / "changed"
    shutil.copytree(unet_inputs.dir, changed)
    with h5py.File(changed / unet_inputs.samples.name, "r+") as f:
        f["calibration/c000"][0, 0, 0] += 1.0
    assert content_key(changed) != key
    unet_inputs.dir = changed
    third = quantize(unet_inputs, tmp_path / "ssh-third", stand_in_image, sshd)
    [other] = input_volumes(docker_client, content_key(changed))
    assert f"inputs kept on the engine in volume {other.name}" in third
    assert len(input_volumes(docker_client)) == 2


def test_an_interrupted_copy_is_never_used(tmp_path, unet_inputs, stand_in_image, docker_client, sshd):
    """A volume labelled with the inputs' content but without the completion marker (a copy cut short) is
    removed, and the inputs are copied anew: the run succeeds on the whole inputs."""
    key = content_key(unet_inputs.dir)
    broken = docker_client.volumes.create("hostctl-inputs-test-broken",
                                          labels={LABEL_INPUTS: key, LABEL_CACHE: "inputs"})
    filler = docker_client.containers.create(stand_in_image, command=["true"], entrypoint=[],
                                             mounts=[docker.types.Mount("/in", broken.name, type="volume")])
    try:
        data = unet_inputs.samples.read_bytes()[:4096]  # the first 4 kB of the samples, no state dict, no marker
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            info = tarfile.TarInfo(unet_inputs.samples.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        assert filler.put_archive("/in", out.getvalue())
    finally:
        filler.remove(force=True)
    stderr = quantize(unet_inputs, tmp_path / "ssh-out", stand_in_image, sshd)
    [volume] = input_volumes(docker_client, key)
    assert volume.name != broken.name
    assert f"inputs kept on the engine in volume {volume.name}" in stderr
    reader = docker_client.containers.create(stand_in_image, command=["true"], entrypoint=[],
                                             mounts=[docker.types.Mount("/in", volume.name, type="volume")])
    try:
        stream, _ = reader.get_archive(f"/in/{MARKER}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile(MARKER).read().decode() == key
    finally:
        reader.remove(force=True)


def test_the_newest_are_kept_and_clean_removes_the_rest(tmp_path, unet_inputs, stand_in_image, docker_client, sshd):
    first_key = content_key(unet_inputs.dir)
    quantize(unet_inputs, tmp_path / "ssh-a", stand_in_image, sshd, HOSTCTL_INPUT_CACHE="1")
    changed = tmp_path / "changed"
    shutil.copytree(unet_inputs.dir, changed)
    (changed / "notes.txt").write_text("another content\n")
    unet_inputs.dir = changed
    stderr = quantize(unet_inputs, tmp_path / "ssh-b", stand_in_image, sshd, HOSTCTL_INPUT_CACHE="1")
    assert "removed 1 older one(s)" in stderr
    assert input_volumes(docker_client, first_key) == []
    [kept] = input_volumes(docker_client)
    # a volume a container uses stays; `hostctl clean` over ssh removes the others
    holder = docker_client.containers.create(stand_in_image, command=["true"], entrypoint=[],
                                             mounts=[docker.types.Mount("/in", kept.name, type="volume")])
    try:
        spare = docker_client.volumes.create("hostctl-inputs-test-spare", labels={LABEL_CACHE: "inputs"})
        code = docker_client.volumes.list(filters={"label": f"{LABEL_INPUTS}={content_key(PAYLOAD_DIR)}"})
        assert len(code) == 1 and code[0].name.startswith("hostctl-code-")  # the payload's, kept by the runs
        unused = sorted(v.name for v in docker_client.volumes.list(filters={"label": LABEL_CACHE})
                        if v.name != kept.name)
        assert spare.name in unused and code[0].name in unused
        listed = run_hostctl(["clean", "--dry-run", "--json"], env=sshd.client_env(), cwd=tmp_path)
        assert sorted(json.loads(listed.stdout)["engine volumes"]) == unused
        cleaned = run_hostctl(["clean"], env=sshd.client_env(), cwd=tmp_path)
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed {len(unused)} engine volumes" in cleaned.stdout + cleaned.stderr
        assert [v.name for v in docker_client.volumes.list(filters={"label": LABEL_CACHE})] == [kept.name]
    finally:
        holder.remove(force=True)


def test_the_cache_can_be_turned_off(tmp_path, unet_inputs, stand_in_image, docker_client, sshd):
    stderr = quantize(unet_inputs, tmp_path / "ssh-off", stand_in_image, sshd, HOSTCTL_INPUT_CACHE="0")
    assert "inputs kept" not in stderr and "already on the engine" not in stderr
    assert input_volumes(docker_client) == []


def test_a_bad_cache_setting_is_one_line(tmp_path, unet_inputs, stand_in_image, docker_client, sshd):
    proc = run_hostctl(docker_args(unet_inputs, tmp_path / "ssh-bad", stand_in_image),
                       env=sshd.client_env(HOSTCTL_INPUT_CACHE="lots"))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HOSTCTL_INPUT_CACHE=lots" in errors[0], proc.stderr
    assert "0 turns the cache off" in proc.stderr
    assert not (tmp_path / "ssh-bad").exists()


def _copying(tmp_path, unet_inputs, image, docker_client, sshd) -> tuple[subprocess.Popen, Path, dict, str]:
    """A quantize over ssh with 512 MB of inputs, caught while they go in (its container started, the payload
    waiting): its process (a session of its own), output directory, what that held before, the inputs' key.

    Watched through the engine's events: listing containers waits while an archive goes into one (the engine
    locks it)."""
    with open(unet_inputs.dir / "padding.bin", "wb") as f:  # enough to copy for seconds over loopback
        block = os.urandom(1 << 20)
        for _ in range(512):
            f.write(block)
    out = tmp_path / "ssh-out"
    before = _earlier_results(out)
    env = dict(os.environ, COLUMNS="200", **sshd.client_env())
    env["PYTHONPATH"] = source_path(env.get("PYTHONPATH"))
    events = docker_client.events(decode=True, filters={"type": "container", "event": "start",
                                                        "label": "hostctl.run"})
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hostctl",
                                 *docker_args(unet_inputs, out, image, "--no-evaluate", "--threads", "1")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        started = next(events)
    finally:
        events.close()
    assert started["Actor"]["Attributes"]["hostctl.pid"] == str(proc.pid)
    time.sleep(0.3)  # the copy is under way
    return proc, out, before, content_key(unet_inputs.dir)


def _nothing_left(proc, tmp_path, docker_client, sshd, key: str, since: float) -> None:
    """The payload's container goes within 60 s; no volume of those inputs survives `hostctl clean`."""
    while _running(docker_client, proc.pid) and time.monotonic() - since < 60:
        time.sleep(1)
    assert _running(docker_client, proc.pid) == []
    print("left on the engine after the run:", [v.name for v in input_volumes(docker_client, key)])
    cleaned = run_hostctl(["clean"], env=sshd.client_env(), cwd=tmp_path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert input_volumes(docker_client, key) == []


def test_the_link_drops_while_the_inputs_go_in(tmp_path, unet_inputs, stand_in_image, docker_client, own_sshd):
    """The payload already started and waits while its inputs are copied; the ssh sessions die mid-copy: exit 1
    within 30 s with one line, earlier results intact, the payload's container gone within 60 s, and no volume
    of that content kept half-filled (the run removes it, or `hostctl clean` does)."""
    proc, out, before, key = _copying(tmp_path, unet_inputs, stand_in_image, docker_client, own_sshd)
    stderr, cut = kill_sessions_and_check(proc, own_sshd)
    assert "Calibrating" not in stderr  # the link dropped before the payload had its inputs
    assert "512/512" not in stderr and "537/537" not in stderr  # the bar stopped where the copy did
    assert tree_snapshot(out) == before
    _nothing_left(proc, tmp_path, docker_client, own_sshd, key, cut)


def test_ctrl_c_while_the_inputs_go_in(tmp_path, unet_inputs, stand_in_image, docker_client, sshd):
    """Ctrl-C during the copy: 130 as locally, earlier results intact, nothing left on the engine."""
    proc, out, before, key = _copying(tmp_path, unet_inputs, stand_in_image, docker_client, sshd)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: hostctl and every child in its group
    cut = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    print(f"SIGINT during the copy: exit {proc.returncode} after {time.monotonic() - cut:.1f} s\n{stderr[-600:]}")
    assert proc.returncode == 130, stderr
    assert "Calibrating" not in stderr
    assert tree_snapshot(out) == before
    _nothing_left(proc, tmp_path, docker_client, sshd, key, cut)


def test_an_interrupted_copy_of_the_payload_code_is_never_used(tmp_path, unet_inputs, stand_in_image, docker_client,
                                                               sshd):
    """The payload's code kept on the engine, but cut short (no marker, half the package): the container's shim
    refuses it before Python starts, the run removes it and copies the code anew, and succeeds."""
    key = content_key(PAYLOAD_DIR)
    broken = docker_client.volumes.create("hostctl-code-test-broken", labels={LABEL_INPUTS: key, LABEL_CACHE: "code"})
    filler = docker_client.containers.create(stand_in_image, command=["true"], entrypoint=[],
                                             mounts=[docker.types.Mount("/code", broken.name, type="volume")])
    try:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            tar.add(str(PAYLOAD_DIR / "__main__.py"), arcname="__main__.py")  # no job.py, no run.py, no marker
        assert filler.put_archive("/code", out.getvalue())
    finally:
        filler.remove(force=True)
    stderr = quantize(unet_inputs, tmp_path / "ssh-out", stand_in_image, sshd)
    assert "the volume is incomplete" in stderr  # the shim's word, before the run went on with new volumes
    assert broken.name not in [v.name for v in docker_client.volumes.list()]
    code = docker_client.volumes.list(filters={"label": f"{LABEL_INPUTS}={key}"})
    assert code and all(v.attrs["Labels"][LABEL_CACHE] == "code" for v in code)
    assert (tmp_path / "ssh-out" / "quant_info.json").is_file()
