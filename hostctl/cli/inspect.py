"""hostctl inspect"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import (
    DOCKER_PANEL,
    CondaEnv,
    Debug,
    Image,
    InputSize,
    JsonOutput,
    ModelArgs,
    ModelPath,
    ModelSpec,
    NumClasses,
    Pull,
    Requirements,
    parse_model_args,
)
from hostctl.options import DEFAULT_CONDA_ENV, DEFAULT_IMAGE
from hostctl.ui import Reporter, print_json

TARGET = "Target DPU (one of)"
DOCKER = DOCKER_PANEL

EXAMPLES = """
[bold]Examples[/]

  hostctl inspect --board kv260 --input-size 3 256 256
  hostctl inspect --target DPUCZDX8G_ISA1_B512 --model my_net:Net \\
      --model-path src
  hostctl inspect --fingerprint 0x101000016010407 --json
  hostctl inspect --list-targets
  [dim]# vai_q_pytorch's own Inspector, in the image:[/]
  hostctl inspect --board kv260 --runtime docker
"""


def _list_targets(value: bool) -> None:
    if not value:
        return
    from container_payload.inspector import targets

    for name in targets.names():
        typer.echo(name)
    boards = ", ".join(f"{board} -> {name}" for board, name in targets.BOARDS.items())
    typer.echo(f"boards: {boards}", err=True)
    raise typer.Exit()


@app.command("inspect", epilog=EXAMPLES)
def inspect_(
    target: Annotated[str | None, typer.Option(envvar="HOSTCTL_TARGET", rich_help_panel=TARGET, metavar="NAME",
                                               help="A DPU target, e.g. DPUCZDX8G_ISA1_B4096.")] = None,
    board: Annotated[str | None, typer.Option(envvar="HOSTCTL_BOARD", rich_help_panel=TARGET, metavar="BOARD",
                                              help="kv260, zcu102, zcu104, vck190, vek280 or v70.")] = None,
    fingerprint: Annotated[str | None, typer.Option(envvar="HOSTCTL_FINGERPRINT", rich_help_panel=TARGET,
                                                    metavar="0x...", help="The DPU's fingerprint.")] = None,
    arch: Annotated[Path | None, typer.Option(envvar="HOSTCTL_ARCH", rich_help_panel=TARGET, metavar="FILE",
                                              help="Your board's arch.json.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        envvar="HOSTCTL_INSPECT_OUTPUT_DIR",
        help="Where inspect.json, inspect_TARGET.txt and the graph's picture go. Default: "
             "deployment/deployment_artifacts/inspection_TARGET.")] = None,
    input_size: InputSize = (3, 512, 512),
    num_classes: NumClasses = 7,
    model: ModelSpec = None,
    model_path: ModelPath = None,
    model_arg: ModelArgs = None,
    python: Annotated[str | None, typer.Option(envvar="HOSTCTL_PYTHON", metavar="PATH",
                                               help="The interpreter that runs the inspection.")] = None,
    runtime: Annotated[str, typer.Option(
        envvar="HOSTCTL_INSPECT_RUNTIME", metavar="local|docker",
        help="local: hostctl's emulation of nndct's rule-based Inspector, no image. docker: "
             "vai_q_pytorch's own Inspector (the compiler's patterns) in the Vitis AI image.")] = "local",
    image: Image = DEFAULT_IMAGE,
    conda_env: CondaEnv = DEFAULT_CONDA_ENV,
    pull: Pull = "missing",
    requirements: Requirements = None,
    list_targets: Annotated[bool, typer.Option("--list-targets", callback=_list_targets, is_eager=True,
                                               help="List every DPU target and board, then exit.")] = False,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Tell in seconds, before quantizing, which ops of the model a DPU cannot run and how many DPU subgraphs it
    would compile into (vai_q_pytorch's rule-based inspector, emulated: no image, no weights needed; or its own
    Inspector in the Vitis AI image with --runtime docker)."""
    from container_payload.job import BUILTIN_MODEL
    from hostctl.cli.quantize import _choice
    from hostctl.inspect import InspectOptions, inspect_model, render
    from hostctl.options import PULL_POLICIES, RUNTIMES

    opts = InspectOptions(target=target, board=board, fingerprint=fingerprint, arch=arch, output_dir=output_dir,
                          input_size=tuple(input_size), num_classes=num_classes, model=model or BUILTIN_MODEL,
                          model_path=model_path, model_args=parse_model_args(model_arg), python=python,
                          runtime=_choice(runtime, RUNTIMES, "--runtime"), image=image, conda_env=conda_env,
                          pull=_choice(pull, PULL_POLICIES, "--pull"), requirements=requirements)
    reporter = Reporter(debug=debug)
    summary = inspect_model(opts, reporter)
    render(summary, reporter)
    if json_output:
        print_json(summary.to_dict())
    reporter.success(f"inspection in {summary.output_dir}")
