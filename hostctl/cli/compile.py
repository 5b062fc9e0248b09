"""hostctl compile"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from container_payload.job import BOARDS
from hostctl.cli import app
from hostctl.cli.common import DOCKER_PANEL, CondaEnv, Debug, Image, JsonOutput, Pull
from hostctl.errors import UsageError
from hostctl.options import DEFAULT_CONDA_ENV, DEFAULT_IMAGE, DEFAULT_OUTPUT_DIR, PULL_POLICIES
from hostctl.ui import Reporter, print_json

DOCKER = DOCKER_PANEL
TARGET = "Target DPU (one of)"

EXAMPLES = """
[bold]Examples[/]

  [dim]# the *_int.xmodel of quantize's output, for a KV260:[/]
  hostctl compile
  hostctl compile --board zcu104 --net-name unet
  hostctl compile --arch my_board/arch.json --output-dir compiled_mine
  hostctl compile --fingerprint 0x101000016010407 \\
      --xmodel results/Unet_int.xmodel
"""


@app.command("compile", epilog=EXAMPLES)
def compile_(
    input_dir: Annotated[Path, typer.Option(envvar="HOSTCTL_COMPILE_INPUT_DIR",
                                            help="The quantize step's output directory, holding one *_int.xmodel.")]
    = DEFAULT_OUTPUT_DIR,
    xmodel: Annotated[Path | None, typer.Option(envvar="HOSTCTL_XMODEL", help="The quantized xmodel, if not the "
                                                "one in --input-dir.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        envvar="HOSTCTL_COMPILE_OUTPUT_DIR",
        help="Where the compiled model goes; default: deployment/deployment_artifacts/compiled_BOARD.")]
    = None,
    board: Annotated[str | None, typer.Option(envvar="HOSTCTL_BOARD", rich_help_panel=TARGET,
                                              help=f"{', '.join(BOARDS)} (default kv260): the image's arch.json.")]
    = None,
    arch: Annotated[Path | None, typer.Option(envvar="HOSTCTL_ARCH", rich_help_panel=TARGET, metavar="FILE",
                                              help="Your board's arch.json (mounted read-only).")] = None,
    fingerprint: Annotated[str | None, typer.Option(envvar="HOSTCTL_FINGERPRINT", rich_help_panel=TARGET,
                                                    metavar="0x...",
                                                    help="A DPU fingerprint; hostctl writes the arch.json.")] = None,
    net_name: Annotated[str | None, typer.Option(envvar="HOSTCTL_NET_NAME",
                                                 help="Name of the compiled model; default: the model class.")]
    = None,
    image: Image = DEFAULT_IMAGE,
    conda_env: CondaEnv = DEFAULT_CONDA_ENV,
    pull: Pull = "missing",
    keep_container: Annotated[bool, typer.Option(rich_help_panel=DOCKER,
                                                 help="Keep the stopped container for debugging.")] = False,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Compile a quantized xmodel for a board's DPU (vai_c_xir in the Vitis AI image) and say what fell off it."""
    from hostctl.compile import CompileOptions, compile_model, render_report

    if pull not in PULL_POLICIES:
        raise UsageError(f"--pull {pull!r} is not one of: {', '.join(PULL_POLICIES)}",
                         f"Pass one of {', '.join(PULL_POLICIES)}.")
    opts = CompileOptions(input_dir=input_dir, xmodel=xmodel, output_dir=output_dir, board=board, arch=arch,
                          fingerprint=fingerprint, net_name=net_name, image=image, conda_env=conda_env, pull=pull,
                          keep_container=keep_container)
    reporter = Reporter(debug=debug)
    summary = compile_model(opts, reporter)
    render_report(summary.report, reporter)
    if json_output:
        print_json(summary.to_dict())
    reporter.success(f"compiled model in {summary.output_dir}")
