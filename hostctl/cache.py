"""hostctl's cache directory: $HOSTCTL_CACHE_DIR, else $XDG_CACHE_HOME/hostctl, else ~/.cache/hostctl."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("HOSTCTL_CACHE_DIR"):
        return Path(os.environ["HOSTCTL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hostctl"
