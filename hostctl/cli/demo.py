"""hostctl demo"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import Debug, JsonOutput
from hostctl.options import DEFAULT_IMAGE
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  [dim]# A fixed 200 training steps on one thread: the same model on any[/]
  [dim]# machine, a busy one only takes longer. Measured on 2 cores beside a[/]
  [dim]# CPU-bound process: 2-2.2 min of CPU time, 2.7-3 min in all, float[/]
  [dim]# mIoU 0.955, quantized 0.954.[/]
  hostctl demo
  hostctl demo --output-dir /tmp/demo --runtime docker \\
      --image xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306
  hostctl demo --fast                      [dim]# seconds, lower accuracy[/]
  hostctl demo --runtime docker --compile kv260
      [dim]# and the compiled model for a KV260[/]
"""


@app.command(epilog=EXAMPLES)
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the dataset, checkpoint, inputs and results go.")]
    = Path("hostctl-demo"),
    runtime: Annotated[str, typer.Option(help="Where the quantization payload runs: local or docker.")] = "local",
    fast: Annotated[bool, typer.Option(help="A smaller dataset and model, for smoke tests: seconds, lower "
                                            "accuracy.")]
    = False,
    image: Annotated[str, typer.Option(envvar="HOSTCTL_IMAGE", help="With --runtime docker: the image.")]
    = DEFAULT_IMAGE,
    pull: Annotated[str, typer.Option(envvar="HOSTCTL_PULL", help="With --runtime docker: missing, always or never.")]
    = "missing",
    compile_board: Annotated[str | None, typer.Option(
        "--compile", metavar="BOARD", help="Then compile the quantized xmodel for BOARD (kv260, ...); the quantizer "
                                           "is then auto: hybrid where pytorch_nndct imports (it exports the "
                                           "xmodel), else portable (nothing to compile).")] = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Generate a dataset, train a small Unet, prepare, quantize and report: the whole flow in minutes."""
    from hostctl.demo import run_demo

    reporter = Reporter(debug=debug)
    try:
        result = run_demo(output_dir, reporter, runtime=runtime, fast=fast, image=image, pull=pull,
                          compile_board=compile_board)
    finally:
        reporter.close()
    if json_output:
        print_json(result.to_dict())
    places = [("dataset", result.dataset_dir), ("checkpoint", result.checkpoint),
              ("deployment inputs", result.inputs_dir), ("quantization results", result.results_dir)]
    places += [("report", p) for p in result.report_files]
    if result.compile and "skipped" not in result.compile:
        from hostctl.compile import render_report

        render_report(result.compile, reporter)
        places.append(("compiled model", result.results_dir / f"compiled_{compile_board}"))
    reporter.info("Where everything is:")
    for what, path in places:
        reporter.info(f"  {what:<22}{path}")
    metrics = result.metrics or {}
    if metrics.get("float") and metrics.get("quantized"):
        f, q = metrics["float"]["miou"], metrics["quantized"]["miou"]
        reporter.success(f"float mIoU {f:.4f}, quantized mIoU {q:.4f} ({(q - f) * 100:+.2f} points), "
                         f"float/quantized agreement {metrics['agreement']:.2%}")
    if result.quantize_command:
        reporter.info("To quantize the demo's inputs again (the weights go with these model arguments):")
        reporter.info(f"  {result.quantize_command}")
    index = [p for p in result.report_files if p.suffix == ".html"]
    reporter.success(f"demo finished in {result.timings['total']:.0f} s"
                     + (f"; open {index[0]} to see the report" if index else ""))
