"""The quick start's Makefile: outside a virtualenv on Debian/Ubuntu (PEP 668), it installs into .venv instead of
failing at pip's externally-managed-environment error; PYTHON=... still wins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(tmp_path: Path, *args: str) -> str:
    """`make -n` on a copy of the Makefile in an empty directory (no .venv there yet)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "BASE_PYTHON", "MAKEFLAGS")}
    result = subprocess.run(["make", "-n", "-C", str(work), *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fake_python(tmp_path: Path, externally_managed: bool) -> Path:
    """An interpreter that answers the Makefile's PEP 668 question as Debian's python3 does (or does not)."""
    path = tmp_path / ("managed-python" if externally_managed else "free-python")
    path.write_text(f"#!/bin/sh\necho {int(externally_managed)}\n")
    path.chmod(0o755)
    return path


def test_an_externally_managed_python_gets_a_project_venv(tmp_path):
    base = fake_python(tmp_path, True)
    out = dry_run(tmp_path, "demo", f"BASE_PYTHON={base}")
    assert f"{base} -m venv .venv" in out
    assert ".venv/bin/python -m pip install -q -e '.[dev]'" in out
    assert ".venv/bin/python -m hostctl demo --runtime local" in out
    out = dry_run(tmp_path, "test", f"BASE_PYTHON={base}")
    assert "PYTHON=.venv/bin/python scripts/test.sh" in out


def test_a_free_python_is_used_as_it_is(tmp_path):
    base = fake_python(tmp_path, False)
    out = dry_run(tmp_path, "demo", f"BASE_PYTHON={base}")
    assert "venv" not in out
    assert f"{base} -m hostctl demo --runtime local" in out


def test_python_on_the_command_line_wins(tmp_path):
    base = fake_python(tmp_path, True)
    out = dry_run(tmp_path, "demo", f"BASE_PYTHON={base}", "PYTHON=/opt/env/bin/python")
    assert "venv" not in out
    assert "/opt/env/bin/python -m hostctl demo --runtime local" in out


def test_the_makefile_asks_this_python_the_pep_668_question_right(tmp_path):
    marker = Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    managed = sys.prefix == sys.base_prefix and marker.is_file()
    out = dry_run(tmp_path, "demo", f"BASE_PYTHON={sys.executable}")
    assert (".venv/bin/python -m hostctl demo" in out) == managed


def test_the_venv_is_not_committed():
    assert "/.venv/" in (ROOT / ".gitignore").read_text().split()
