"""hostctl doctor"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import JsonOutput
from hostctl.doctor import diagnose
from hostctl.errors import EXIT_ENV
from hostctl.options import DEFAULT_IMAGE, DEFAULT_OUTPUT_DIR
from hostctl.ui import Reporter, print_checklist, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl doctor
  hostctl doctor --image hostctl-stand-in:latest --json
"""


@app.command(epilog=EXAMPLES)
def doctor(
    image: Annotated[str, typer.Option(envvar="HOSTCTL_IMAGE", help="The image quantize would use.")] = DEFAULT_IMAGE,
    output_dir: Annotated[Path, typer.Option(envvar="HOSTCTL_OUTPUT_DIR")] = DEFAULT_OUTPUT_DIR,
    json_output: JsonOutput = False,
) -> None:
    """Check the Docker engine, image, platform, disk, uid/gid and socket; print what to fix. Exit 3 if any fails."""
    findings = diagnose(image, output_dir)
    if json_output:
        print_json([f.to_dict() for f in findings])
    print_checklist(Reporter(), "hostctl doctor", [(f.ok, f.check, f.detail, f.fix) for f in findings])
    if not all(f.ok for f in findings):
        raise typer.Exit(EXIT_ENV)
