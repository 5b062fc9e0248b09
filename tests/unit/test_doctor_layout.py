"""hostctl doctor at 80 columns: a left-aligned checklist whose fixes are whole commands (a `docker pull` line
broken inside the image name cannot be copied)."""

from __future__ import annotations

import pytest
from helpers import hostctl_inprocess

import hostctl.cli.doctor as doctor_cli
from hostctl.doctor import Finding
from hostctl.options import DEFAULT_IMAGE

FINDINGS = [
    Finding("platform", True, "Linux x86_64, Python 3.11.7"),
    Finding("disk", True, "81 GB free for results at /work/main/deployment/deployment_artifacts, 81 GB free for "
                          "images at /var/lib/docker"),
    Finding("image", False, f"{DEFAULT_IMAGE} is not on this machine (hostctl quantize pulls it with --pull "
                            "missing, the default)", f"docker pull {DEFAULT_IMAGE}"),
    Finding("socket", False, "/var/run/docker.sock does not exist",
            "sudo systemctl start docker\nsudo apt-get install docker.io && sudo systemctl start docker"),
    Finding("leftover containers", False, "2 hostctl container(s) to clean", "hostctl clean"),
]


@pytest.mark.parametrize("columns", [80, 200])
def test_doctor_is_a_checklist_of_whole_commands(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(doctor_cli, "diagnose", lambda image, output_dir: FINDINGS)
    code, _, err = hostctl_inprocess(["doctor"], capsys)
    assert code == 3
    lines = err.splitlines()
    assert all(len(line.rstrip()) <= columns for line in lines), err
    # Left-aligned: each check starts its line with its status, then its name.
    for finding in FINDINGS:
        status = "ok" if finding.ok else "FAIL"
        assert any(line.startswith(status) and line.split()[1] == finding.check.split()[0] for line in lines), err
    # Every fix line is on one line, whole, and so is every path and image name in the details.
    for finding in FINDINGS:
        for command in finding.fix.splitlines():
            assert any(line.strip().endswith(command) and line.strip().split(":", 1)[1].strip() == command
                       for line in lines), (command, err)
    for word in (DEFAULT_IMAGE, "/work/main/deployment/deployment_artifacts,", "/var/lib/docker"):
        assert any(word in line for line in lines), (word, err)
    assert "│" not in err and "┃" not in err  # not a table
