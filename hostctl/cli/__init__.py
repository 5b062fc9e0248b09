"""The Typer app: one module per verb. Commands parse options, call one core function and render its result."""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from hostctl import signals

# Before the imports that take time (typer, rich, the verbs): a Ctrl-C or SIGTERM during them ends hostctl with
# one line and its exit code, not a traceback or a silent death. main() installs the handler for the command.
_restore_signals = signals.exit_while_starting()

import typer  # noqa: E402 - after the start-up signal handler, on purpose

from hostctl import __version__  # noqa: E402 - likewise
from hostctl.errors import HostctlError, UsageError  # noqa: E402 - likewise

app = typer.Typer(
    name="hostctl",
    help="Quantize PyTorch models for AMD/Xilinx DPUs (Vitis AI) with one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hostctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Quantize PyTorch models for AMD/Xilinx DPUs (Vitis AI) with one command."""


from hostctl.cli import help as _help  # noqa: E402 - likewise

_help.install()

from hostctl.cli import (  # noqa: E402,F401 - registers the verbs
    clean,
    compile,
    demo,
    diff,
    doctor,
    evaluate,
    inspect,
    prepare,
    quantize,
)

_help.reflow_docstrings(app)

_restore_signals()

# HOSTCTL_DEBUG's values, as click reads a boolean option's variable (less its one-letter forms).
DEBUG_VAR = "HOSTCTL_DEBUG"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one error handler for every verb."""
    args = sys.argv[1:] if argv is None else argv
    with signals.stop_on_signals(process_exit=argv is None):
        _main(args)
        swallowed = signals.pending_stop()
        if swallowed is not None:  # its Stop was lost in a callback: the command still ends as interrupted
            from hostctl.errors import Interrupted

            _fail(Interrupted(swallowed), args, "--debug" in args)


def _main(args: list[str]) -> None:
    debug = "--debug" in args
    try:  # the config module's import too: a signal during it is a Stop like any other
        from hostctl.config import load_default_map

        debug = _debug_from_env() or debug
        default_map = load_default_map(_check_config_key)
        code = app(args=args, prog_name="hostctl", default_map=default_map, standalone_mode=False)
    except signals.Stop as exc:  # a signal outside a run (validation, evaluate, a model's import)
        from hostctl.errors import Interrupted

        signals.pending_stop()
        _fail(Interrupted(exc.signum), args, debug)
    except typer.Abort:  # end of input at a prompt
        from hostctl.errors import Interrupted

        _fail(Interrupted(signal.SIGINT), args, debug)
    except HostctlError as exc:
        _fail(exc, args, debug)
    except OSError as exc:  # an I/O error no step translated: still one line, never a traceback
        from hostctl.errors import io_error

        _fail(io_error(exc), args, debug)
    except Exception as exc:  # noqa: BLE001 - click's usage errors, and the last resort against a traceback
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            _fail(_unexpected(exc), args, debug)
        elif not exc.format_message().strip():  # no_args_is_help: the help is the message
            sys.exit(exc.exit_code)
        else:  # click's usage errors, raised as such because standalone_mode is off
            _fail(_usage_error(exc), args, debug)
    else:
        if isinstance(code, int) and code:
            sys.exit(code)


def _debug_from_env() -> bool:
    """HOSTCTL_DEBUG as a boolean: a value that is neither (`maybe`, `2`) is refused rather than taken as true."""
    raw = os.environ.get(DEBUG_VAR)
    value = (raw or "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise UsageError(f"{DEBUG_VAR}={raw!r} is neither true nor false",
                     f"Set it to one of {', '.join(TRUE_WORDS)} to show tracebacks, to one of 0, false, no, off, "
                     "or leave it empty or unset.")


def _unexpected(exc: Exception) -> HostctlError:
    """An exception no step expected: still one line and exit 1; the traceback is --debug's."""
    from hostctl.errors import RunFailed

    text = " ".join(str(exc).split())
    text = text[:300] + ("..." if len(text) > 300 else "")
    return RunFailed(f"unexpected {type(exc).__name__}{': ' + text if text else ''}",
                     f"This is a bug in hostctl: run again with --debug ({DEBUG_VAR}=1) and report the traceback.")


def _usage_error(exc: Exception) -> HostctlError:
    """click's message as one `error:` line; an `(env var: X)` note only when X is really set."""
    message = exc.format_message()  # type: ignore[attr-defined]
    message = re.sub(r" \(env var: '([A-Z_]+)'\)", lambda m: m.group(0) if os.environ.get(m.group(1)) else "",
                     message)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "hostctl"
    error = UsageError(" ".join(message.split()), f"See `{command} --help`.")
    error.exit_code = exc.exit_code  # type: ignore[attr-defined]
    return error


def _fail(exc: HostctlError, args: list[str], debug: bool) -> None:
    from hostctl.errors import Interrupted
    from hostctl.ui import Reporter, print_json

    if isinstance(exc, Interrupted):
        signals.ignore_further()
    if debug:
        import traceback

        traceback.print_exc()
    Reporter().error(exc.message, exc.hint)
    if "--json" in args:
        status = "interrupted" if isinstance(exc, Interrupted) else "failed"
        print_json({"status": status, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
    sys.exit(exc.exit_code)


@functools.lru_cache(maxsize=1)
def _commands() -> dict[str, Any]:
    """The click commands behind the verbs, built once per process (not once per key of hostctl.toml)."""
    import typer.main

    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _check_config_key(path: Path, table: str | None, key: str, value: Any) -> str:
    """The parameter name of a file key; unknown keys and values the option refuses name the file and the key."""
    import difflib

    from hostctl.config import FILE_EXCLUDED
    from hostctl.errors import InputError

    verb = table or "quantize"
    command = _commands()[verb]
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
