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
    from hostctl.evaluate import render_metrics
    from hostctl.report import evaluate_run

    reporter = Reporter(debug=debug)
    try:
        result = evaluate_run(input_dir / SAMPLES, output_dir, num_classes, reporter, report=report)
    finally:
        reporter.close()
    render_metrics(result.metrics, reporter)
    if json_output:
        print_json(result.to_dict())
    reporter.success(f"metrics in {result.metrics_file}")
    if result.report_files:
        reporter.success(f"report in {result.report_files[-1]}")
