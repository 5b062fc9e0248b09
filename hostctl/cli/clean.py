"""hostctl clean"""

from __future__ import annotations

import shutil
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
  hostctl clean --output-dir results --output-dir other_results
"""


@app.command(epilog=EXAMPLES)
def clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    output_dir: Annotated[list[Path] | None, typer.Option(
        help="Also sweep what dead runs left beside this output directory (staging, old results, lock, "
             "failed-run directories but the newest); repeatable. Default: the quantize default.")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Remove containers hostctl left (kept or orphaned), requirement caches of images that are gone, the
    temporary files of runs that died (beside output directories, and payload staging in the temp directory),
    failed-run directories older than the newest one, and the volumes a remote engine keeps (inputs and the payload's
    code, when not in use)."""
    from hostctl.errors import EnvironmentProblem
    from hostctl.runtime.docker import clean as clean_up

    dirs = output_dir or [DEFAULT_OUTPUT_DIR]
    removed: dict = {"run leftovers": [str(p) for p in _sweep_files(dirs, dry_run)],
                     "failed-run directories": [str(p) for p in _sweep_failed(dirs, dry_run)]}
    unchecked = None
    try:
        removed.update(clean_up(dry_run))
    except EnvironmentProblem as exc:  # the files are swept all the same; containers need an engine to be seen
        unchecked = exc.message
    reporter = Reporter()
    if json_output:
        print_json({**removed, **({"not_checked": {"containers": unchecked}} if unchecked else {})})
    verb = "would remove" if dry_run else "removed"
    for kind, items in removed.items():
        note = " (all but the newest of each output directory)" if kind == "failed-run directories" else ""
        reporter.info(f"{verb} {len(items)} {kind}{note}" + "".join(f"\n  {item}" for item in items))
    if unchecked:
        reporter.warn(f"containers and requirement caches not checked: {unchecked}")


def _sweep_failed(output_dirs: list[Path], dry_run: bool) -> list[Path]:
    """Failed-run directories (`<output-dir>.failed-<time>/`) older than the newest one."""
    from hostctl import staging

    found: list[Path] = []
    for output_dir in output_dirs:
        old = staging.old_failed_runs(output_dir.resolve())
        if not dry_run:
            for path in old:
                shutil.rmtree(path, ignore_errors=True)
        found += old
    return found


def _sweep_files(output_dirs: list[Path], dry_run: bool) -> list[Path]:
    """Leftovers of dead runs: skipped for an output directory that a live run holds."""
    from hostctl import staging

    found: list[Path] = []
    for output_dir in output_dirs:
        if not staging.aside_dir(output_dir.resolve()).is_dir() or staging.locked_by_live_run(output_dir.resolve()):
            continue
        if dry_run:
            found += staging.leftovers(output_dir.resolve())
        else:
            with staging.OutputLock(output_dir):
                staging.check_recovered(output_dir.resolve())
                found += staging.sweep_leftovers(output_dir.resolve())
    return found + staging.sweep_payload_dirs(dry_run=dry_run)
