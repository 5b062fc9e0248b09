"""The key of the input volumes a remote engine keeps (hostctl/runtime/docker/inputs.py): what copy_in sends,
and nothing else."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hostctl.errors import UsageError
from hostctl.runtime.docker.inputs import KEEP_DEFAULT, content_key, kept


def inputs(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "quantization_samples.h5").write_bytes(bytes(range(256)) * 4096)
    (root / "state_dict.pt").write_bytes(b"weights")
    (root / "sub" / "notes.txt").write_text("calibration set 3\n")
    return root


def test_the_key_follows_the_content_not_the_place(tmp_path):
    a = inputs(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "state_dict.pt", (0, 0))  # times are not content
    assert content_key(a) == content_key(b)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "x.pyc").write_bytes(b"\0")  # not sent, not keyed
    assert content_key(a) == content_key(b)


@pytest.mark.parametrize("change", ["byte", "rename", "add", "remove", "link"])
def test_any_change_of_what_is_sent_changes_the_key(tmp_path, change):
    root = inputs(tmp_path / "in")
    before = content_key(root)
    if change == "byte":
        data = bytearray((root / "quantization_samples.h5").read_bytes())
        data[500_000] ^= 1
        (root / "quantization_samples.h5").write_bytes(bytes(data))
    elif change == "rename":
        (root / "sub" / "notes.txt").rename(root / "sub" / "notes2.txt")
    elif change == "add":
        (root / "empty").write_bytes(b"")
    elif change == "remove":
        (root / "sub" / "notes.txt").unlink()
    else:
        (root / "latest.pt").symlink_to("state_dict.pt")
    assert content_key(root) != before


def test_how_many_are_kept(monkeypatch):
    monkeypatch.delenv("HOSTCTL_INPUT_CACHE", raising=False)
    assert kept() == KEEP_DEFAULT
    monkeypatch.setenv("HOSTCTL_INPUT_CACHE", "0")
    assert kept() == 0
    for bad in ("-1", "three", "1.5"):
        monkeypatch.setenv("HOSTCTL_INPUT_CACHE", bad)
        with pytest.raises(UsageError, match=f"HOSTCTL_INPUT_CACHE={bad} is not a count"):
            kept()
