"""hostctl evaluate"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from container_payload.job import SAMPLES
from hostctl.cli import app
from hostctl.cli.common import Debug, JsonOutput
from hostctl.options import DEFAULT_INPUT_DIR, DEFAULT_OUTPUT_DIR
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl evaluate                                   [dim]# tutorial layout[/]
  hostctl evaluate --input-dir inputs --output-dir results --no-report
"""


@app.command(epilog=EXAMPLES)
def evaluate(
    input_dir: Annotated[Path, typer.Option(help=f"Holds {SAMPLES} (its labels group gives the ground truth).")]
    = DEFAULT_INPUT_DIR,
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
        try:
            result = evaluate_run(input_dir / SAMPLES, output_dir, num_classes, reporter, report=report)
        finally:
            reporter.close()
        record_written(output_dir, [METRICS, *(f"{REPORT_DIR}/{p.name}" for p in result.report_files)])
    render_metrics(result.metrics, reporter)
    if json_output:
        print_json(result.to_dict())
    reporter.success(f"metrics in {result.metrics_file}")
    if result.report_files:
        reporter.success(f"report in {result.report_files[-1]}")
