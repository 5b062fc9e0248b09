"""Shared fixtures; the helpers they use live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FAKE_NNDCT, Inputs, make_inputs, tiny_unet


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the tests' caches (validation, requirements) out of the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("hostctl-cache")
    os.environ["HOSTCTL_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture
def unet_inputs(tmp_path: Path) -> Inputs:
    return make_inputs(tmp_path / "inputs", tiny_unet())


@pytest.fixture
def fake_nndct_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(FAKE_NNDCT), os.environ.get("PYTHONPATH")) if p)}
