"""The Typer app: one module per verb. Commands parse options, call one core function and render its result."""

from __future__ import annotations

import os
import sys

import typer

from hostctl import __version__
from hostctl.errors import HostctlError

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


from hostctl.cli import (  # noqa: E402,F401 - registers the verbs
    clean,
    compile,
    demo,
    diff,
    doctor,
    evaluate,
    prepare,
    quantize,
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one error handler for every verb."""
    from hostctl.config import load_default_map
    from hostctl.ui import Reporter

    args = sys.argv[1:] if argv is None else argv
    debug = os.environ.get("HOSTCTL_DEBUG", "") not in ("", "0") or "--debug" in args
    try:
        default_map = load_default_map()
        app(args=args, prog_name="hostctl", default_map=default_map)
    except HostctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        Reporter().error(exc.message, exc.hint)
        if "--json" in args:
            from hostctl.errors import Interrupted
            from hostctl.ui import print_json

            status = "interrupted" if isinstance(exc, Interrupted) else "failed"
            print_json({"status": status, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
