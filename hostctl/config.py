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

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostctl.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "hostctl.toml"
VERBS = ("quantize", "compile", "prepare", "evaluate", "demo", "doctor", "clean")
FILE_EXCLUDED = ("json_output", "debug", "print_docker_cmd")  # per-invocation switches, not project defaults


# check(path, table, key, value) -> the parameter's name; raises InputError for an unknown key or a bad value
KeyCheck = Callable[[Path, "str | None", str, Any], str]


def load_default_map(check: KeyCheck, cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """Click's default_map for the app: {verb: {param_name: value}}, every key and value passed through check."""
    path = (cwd or Path.cwd()) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"cannot be read as TOML ({exc})", "Fix the file or move it away.") from exc
    result: dict[str, dict[str, Any]] = {verb: {} for verb in VERBS}
    for key, value in data.items():
        _check_model_args(path, None, key, value)
        if isinstance(value, dict):
            if key not in VERBS:
                close = difflib.get_close_matches(key, VERBS, n=1)
                raise InputError(path, f"unknown table [{key}]", f"Did you mean [{close[0]}]?" if close
                                 else f"Tables may be: {', '.join(VERBS)}.")
            for k, v in value.items():
                _check_model_args(path, key, k, v)
                result[key][check(path, key, k, v)] = v
        else:
            result["quantize"].setdefault(check(path, None, key, value), value)
    return {verb: values for verb, values in result.items() if values}


def _check_model_args(path: Path, table: str | None, key: str, value: Any) -> None:
    """Model arguments as a TOML table (`model-args = {width = 16}`) are what people write first: say how the
    file takes them, as the flag's repeated KEY=VALUE strings."""
    if key.replace("_", "-") not in ("model-args", "model-arg") or not isinstance(value, dict):
        return
    import json

    items = ", ".join(f'"{k}={v if isinstance(v, str) else json.dumps(v)}"' for k, v in value.items()) or '"width=16"'
    where = f"[{table}] " if table else ""
    raise InputError(path, f"{where}{key!r} is a table; model arguments are a list of KEY=VALUE strings, as "
                     "--model-arg takes them", f"Write it as: model-arg = [{items}]")
