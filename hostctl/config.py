"""Defaults from `hostctl.toml` in the working directory.

Precedence, highest first: command-line flags, HOSTCTL_* environment variables, hostctl.toml, built-in defaults.
The file may hold top-level keys (they apply to `quantize`) and one table per verb:

    input-size = [3, 256, 256]
    [quantize]
    runtime = "local"
    [prepare]
    calib-samples = 300
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hostctl.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "hostctl.toml"
VERBS = ("quantize", "compile", "prepare", "evaluate", "demo", "doctor", "clean")


def load_default_map(cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """Click's default_map for the app: {verb: {param_name: value}}."""
    path = (cwd or Path.cwd()) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"cannot be read as TOML ({exc})", "Fix the file or move it away.") from exc
    result: dict[str, dict[str, Any]] = {verb: {} for verb in VERBS}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in VERBS:
                raise InputError(path, f"unknown table [{key}]", f"Tables may be: {', '.join(VERBS)}.")
            result[key].update({_param(k): v for k, v in value.items()})
        else:
            result["quantize"].setdefault(_param(key), value)
    return {verb: values for verb, values in result.items() if values}


def _param(key: str) -> str:
    return key.replace("-", "_")
