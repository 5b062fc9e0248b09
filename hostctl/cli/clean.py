"""hostctl clean"""

from __future__ import annotations

from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import JsonOutput
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl clean --dry-run     [dim]# list what would go[/]
  hostctl clean
"""


@app.command(epilog=EXAMPLES)
def clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    json_output: JsonOutput = False,
) -> None:
    """Remove containers hostctl left (kept or orphaned) and requirement caches of images that are gone."""
    from hostctl.runtime.docker import clean as clean_up

    removed = clean_up(dry_run)
    if json_output:
        print_json(removed)
    reporter = Reporter()
    verb = "would remove" if dry_run else "removed"
    for kind, items in removed.items():
        reporter.info(f"{verb} {len(items)} {kind}" + "".join(f"\n  {item}" for item in items))
