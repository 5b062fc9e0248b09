"""hostctl clean"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import JsonOutput
from hostctl.options import DEFAULT_OUTPUT_DIR
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl clean --dry-run     [dim]# list what would go[/]
  hostctl clean
"""


@app.command(epilog=EXAMPLES)
def clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    output_dir: Annotated[list[Path] | None, typer.Option(
        help="Also sweep what dead runs left beside this output directory (staging, old results, lock); "
             "repeatable. Default: the quantize default.")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Remove containers hostctl left (kept or orphaned), requirement caches of images that are gone, and the
    temporary files of runs that died (beside output directories, and payload staging in the temp directory)."""
    from hostctl.runtime.docker import clean as clean_up

    removed = {"run leftovers": [str(p) for p in _sweep_files(output_dir or [DEFAULT_OUTPUT_DIR], dry_run)]}
    removed.update(clean_up(dry_run))
    if json_output:
        print_json(removed)
    reporter = Reporter()
    verb = "would remove" if dry_run else "removed"
    for kind, items in removed.items():
        reporter.info(f"{verb} {len(items)} {kind}" + "".join(f"\n  {item}" for item in items))


def _sweep_files(output_dirs: list[Path], dry_run: bool) -> list[Path]:
    """Leftovers of dead runs: skipped for an output directory that a live run holds."""
    from hostctl import staging

    found: list[Path] = []
    for output_dir in output_dirs:
        if not staging.aside_dir(output_dir.resolve()).is_dir() or staging.locked_by_live_run(output_dir.resolve()):
            continue
        if dry_run:
            aside = staging.aside_dir(output_dir.resolve())
            prefix = f".{output_dir.resolve().name}.hostctl-"
            found += [p for p in aside.glob(prefix + "*") if staging.is_own_temp(p.name)]
        else:
            with staging.OutputLock(output_dir):
                found += staging.sweep_leftovers(output_dir.resolve())
    return found + staging.sweep_payload_dirs(dry_run=dry_run)
