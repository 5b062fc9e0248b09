"""hostctl evaluate"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from container_payload.job import SAMPLES
from hostctl.cli import app
from hostctl.cli.common import Debug, JsonOutput
from hostctl.options import DEFAULT_INPUT_DIR, DEFAULT_OUTPUT_DIR
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl evaluate                         [dim]# tutorial layout[/]
  hostctl evaluate --output-dir results    [dim]# with the samples that run used[/]
  hostctl evaluate --input-dir inputs --output-dir results --no-report
"""


def _manifest(output_dir: Path) -> dict[str, Any]:
    import json

    from hostctl.staging import MANIFEST

    try:
        manifest = json.loads((output_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def recorded_facts(output_dir: Path, samples: Path) -> dict[str, str]:
    """What the report names (model, quantizer, run), from the run.json of the run being evaluated."""
    from hostctl.report import run_facts

    manifest = _manifest(output_dir)
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    payload = manifest.get("payload") if isinstance(manifest.get("payload"), dict) else {}
    return run_facts(options, payload.get("backend"), manifest.get("run_id"), samples.resolve())


def recorded_samples(output_dir: Path, reporter: Reporter) -> Path:
    """The samples file the run in output_dir used, as its run.json records it; else the default's."""
    from hostctl.staging import MANIFEST

    try:
        recorded = _manifest(output_dir)["inputs"]["samples"]
    except (KeyError, TypeError):
        return DEFAULT_INPUT_DIR / SAMPLES
    if not isinstance(recorded, str):
        return DEFAULT_INPUT_DIR / SAMPLES
    reporter.info(f"samples: {recorded} (the run's, from {output_dir / MANIFEST})")
    return Path(recorded)


@app.command(epilog=EXAMPLES)
def evaluate(
    input_dir: Annotated[Path | None, typer.Option(
        help=f"Holds {SAMPLES} (its labels group gives the ground truth). Default: the one the run in "
             f"--output-dir used (its run.json says), else {DEFAULT_INPUT_DIR}.", show_default=False)] = None,
    output_dir: Annotated[Path, typer.Option(help="A quantize run's results: holds both prediction files; "
                                                  "metrics.json and report/ are written there.")]
    = DEFAULT_OUTPUT_DIR,
    num_classes: Annotated[int | None, typer.Option(
        min=1, help="Number of classes; default: the predictions' channel count.")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Also write report/ pictures.")] = True,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Metrics of the float and the quantized model: IoU, mIoU, pixel accuracy, Dice, agreement, SQNR."""
    from hostctl.errors import InputError
    from hostctl.evaluate import METRICS, render_metrics
    from hostctl.report import REPORT_DIR, evaluate_run
    from hostctl.staging import OutputLock, foreign_entries, record_written

    reporter = Reporter(debug=debug)
    if not output_dir.is_dir():
        raise InputError(output_dir, "results directory not found", "Pass the --output-dir of a quantize run.")
    with OutputLock(output_dir):
        # metrics.json and report/ are replaced: only when hostctl wrote them (DESIGN.md's output-directory rule)
        clash = [e for e in foreign_entries(output_dir) if e in (METRICS, REPORT_DIR + "/")
                 or e.startswith(REPORT_DIR + "/")]
        if clash:
            raise InputError(output_dir / clash[0], "was not written by hostctl and would be replaced",
                             "Move it away, then run evaluate again.")
        samples = input_dir / SAMPLES if input_dir is not None else recorded_samples(output_dir, reporter)
        try:
            result = evaluate_run(samples, output_dir, num_classes, reporter, report=report,
                                  about=recorded_facts(output_dir, samples))
        finally:
            reporter.close()
        record_written(output_dir, [METRICS, *(f"{REPORT_DIR}/{p.name}" for p in result.report_files)])
    render_metrics(result.metrics, reporter)
    if json_output:
        print_json(result.to_dict())
    reporter.success(f"metrics in {result.metrics_file}")
    if result.report_files:
        reporter.success(f"report in {result.report_files[-1]}")
