"""Pure parts of the Docker runtime: requirement screening, image names, platform checks, the shim."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from hostctl.errors import EnvironmentProblem, UsageError
from hostctl.runtime import docker as rt
from hostctl.runtime.docker import images


@pytest.mark.parametrize("line", ["torch", "torch==2.3.0", "Torch>=2", "torchvision ; python_version>'3'",
                                  "pytorch_nndct", "torch[opt]==2.0", "torch @ https://example/torch.whl"])
def test_requirement_lines_that_replace_torch_are_refused(tmp_path, line):
    req = tmp_path / "requirements.txt"
    req.write_text(f"# comment\nnumpy\n{line}\n")
    with pytest.raises(UsageError, match=r"requirements.txt:3: .* would replace the image's"):
        rt.check_requirements(req)


def test_other_requirements_pass(tmp_path):
    req = tmp_path / "requirements.txt"
    text = "--no-index\n--find-links wheels\ntorchmetrics==1.0\nscipy  # torch is not here\n"
    req.write_text(text)
    assert rt.check_requirements(req) == text


@pytest.mark.parametrize("image,expected", [
    ("xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306", ("xilinx/vitis-ai-pytorch-cpu", "ubuntu2004-3.5.0.306")),
    ("ubuntu", ("ubuntu", "latest")),
    ("localhost:5000/img", ("localhost:5000/img", "latest")),
    ("localhost:5000/img:1", ("localhost:5000/img", "1")),
    ("img@sha256:abc", ("img@sha256:abc", "")),
])
def test_split_image(image, expected):
    assert rt.split_image(image) == expected


def test_image_for_another_architecture_without_emulation(monkeypatch):
    monkeypatch.setattr(images.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(images, "_emulates", lambda arch: False)
    image = SimpleNamespace(attrs={"Architecture": "amd64"}, tags=["xilinx/vitis-ai:3.5"], short_id="abc")
    with pytest.raises(EnvironmentProblem, match="built for amd64 and this host is arm64 without emulation"):
        rt.check_platform(image)
    monkeypatch.setattr(images, "_emulates", lambda arch: True)
    rt.check_platform(image)


def test_shim_is_valid_bash_and_quotes_the_command():
    script = rt.shim(["python", "-c", "print('it''s $HOME')"])[2]
    assert "\n" not in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_owner_of_a_container_from_another_host_is_presumed_alive():
    assert rt.owner_alive({rt.LABEL_HOST: "some-other-machine", rt.LABEL_PID: "1"})


def test_owner_gone_or_pid_reused_means_orphan():
    import os
    import socket

    host = socket.gethostname()
    me = str(os.getpid())
    assert rt.owner_alive({rt.LABEL_HOST: host, rt.LABEL_PID: me, rt.LABEL_PID_START: rt.process_start(os.getpid())})
    assert not rt.owner_alive({rt.LABEL_HOST: host, rt.LABEL_PID: me, rt.LABEL_PID_START: "1"}), "pid reused"
    assert not rt.owner_alive({rt.LABEL_HOST: host, rt.LABEL_PID: "999999999"})
    assert not rt.owner_alive({rt.LABEL_HOST: host, rt.LABEL_PID: "garbage"})
