"""The payload started while the CLI starts (hostctl/warm.py): which command lines start it, and that one not
taken, or whose host goes away, does not outlive its use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hostctl import warm


@pytest.mark.parametrize(("argv", "env", "expected"), [
    (["inspect"], {}, sys.executable),
    (["inspect", "--python", "/opt/vai/bin/python", "--board", "kv260"], {}, "/opt/vai/bin/python"),
    (["inspect", "--python=/opt/a/python", "--python", "/opt/b/python"], {}, "/opt/b/python"),  # the last wins
    (["inspect"], {"HOSTCTL_PYTHON": "/opt/env/python"}, "/opt/env/python"),
    (["inspect", "--python", "/opt/arg/python"], {"HOSTCTL_PYTHON": "/opt/env/python"}, "/opt/arg/python"),
    (["inspect", "--runtime", "local"], {}, sys.executable),
    (["inspect", "--runtime", "docker"], {}, None),  # the payload runs in the image
    (["inspect", "--runtime=docker"], {}, None),
    (["inspect"], {"HOSTCTL_INSPECT_RUNTIME": "docker"}, None),
    (["inspect", "--help"], {}, None),
    (["inspect", "--list-targets"], {}, None),
    (["quantize", "--python", "/opt/vai/bin/python"], {}, None),
    ([], {}, None),
])
def test_only_a_local_inspection_starts_the_payload_early(monkeypatch, argv, env, expected):
    for name in ("HOSTCTL_PYTHON", "HOSTCTL_INSPECT_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert warm._local_inspection_python(argv) == expected


def _warm_payload(monkeypatch, tmp_path: Path) -> warm.WarmPayload:
    monkeypatch.setattr(warm, "_warm", None)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    warm.start(["inspect"])
    started = warm._warm
    assert started is not None and started.python == str(Path(sys.executable).absolute())
    assert Path(started.shim).parent == tmp_path
    return started


def test_a_payload_started_for_another_interpreter_or_environment_is_ended(monkeypatch, tmp_path):
    started = _warm_payload(monkeypatch, tmp_path)
    assert warm.take(started.python, dict(started.extra_env, OMP_NUM_THREADS="2")) is None
    assert started.process.poll() is not None  # killed, not left waiting
    assert not Path(started.shim).exists()
    assert warm.take(started.python, started.extra_env) is None  # taken once: nothing is left to take


def test_the_payload_ends_itself_when_no_job_comes(monkeypatch, tmp_path):
    started = _warm_payload(monkeypatch, tmp_path)
    taken = warm.take(started.python, started.extra_env)
    assert taken is started
    assert started.process.stdin is not None
    started.process.stdin.close()  # what a killed hostctl leaves it: the end of its input
    assert started.process.wait(timeout=120) == 0
    assert started.process.stdout is not None and started.process.stdout.read() == b""
    started.close()
    assert not Path(started.shim).exists()
