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
from pathlib import Path
from typing import Any

from hostctl.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "hostctl.toml"
VERBS = ("quantize", "prepare", "evaluate", "demo", "doctor", "clean")
FILE_EXCLUDED = ("json_output", "debug", "print_docker_cmd")  # per-invocation switches, not project defaults


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
                close = difflib.get_close_matches(key, VERBS, n=1)
                raise InputError(path, f"unknown table [{key}]", f"Did you mean [{close[0]}]?" if close
                                 else f"Tables may be: {', '.join(VERBS)}.")
            for k, v in value.items():
                result[key][_checked(path, key, k, v)] = v
        else:
            result["quantize"].setdefault(_checked(path, None, key, value), value)
    return {verb: values for verb, values in result.items() if values}


def _checked(path: Path, table: str | None, key: str, value: Any) -> str:
    """The parameter name of a file key; unknown keys and values the option refuses name the file and the key."""
    import typer.main

    from hostctl.cli import app

    verb = table or "quantize"
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params
              if getattr(p, "param_type_name", "") == "option" and p.name not in FILE_EXCLUDED}
    name = key.replace("-", "_")
    where = f"[{table}] " if table else ""
    if name not in params:
        flags = sorted(p.name.replace("_", "-") for p in params.values())
        close = difflib.get_close_matches(key, flags, n=1, cutoff=0.5)
        raise InputError(path, f"unknown key {where}{key!r} for `hostctl {verb}`",
                         f"Did you mean {close[0]!r}?" if close else f"Valid keys: {', '.join(flags)}.")
    param = params[name]
    try:  # click (typer carries its own copy) converts the value as it would the flag's
        param.process_value(command.context_class(command), value)
    except Exception as exc:  # noqa: BLE001 - click's BadParameter, whichever copy of click raised it
        raise InputError(path, f"key {where}{key!r}: {getattr(exc, 'message', exc)}",
                         "Fix the value in the file.") from None
    return name
