"""Options shared by several verbs, defined once as Annotated aliases, and the small parsers behind them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hostctl.errors import UsageError

MODEL_PANEL = "Model"
DOCKER_PANEL = "Docker runtime"

InputSize = Annotated[
    tuple[int, int, int],
    typer.Option("--input-size", metavar="C H W", envvar="HOSTCTL_INPUT_SIZE",
                 help="Model input shape without the batch dimension.", rich_help_panel=MODEL_PANEL),
]
NumClasses = Annotated[
    int,
    typer.Option("--num-classes", min=1, envvar="HOSTCTL_NUM_CLASSES",
                 help="Number of classes: the channels of the model's output (the built-in Unet is built with "
                      "it; a custom model's output is checked against it, and evaluation counts them).",
                 rich_help_panel=MODEL_PANEL),
]
ModelSpec = Annotated[
    str | None,
    typer.Option("--model", metavar="MODULE:CLASS", envvar="HOSTCTL_MODEL",
                 help="Any importable nn.Module; default: the built-in Unet.", rich_help_panel=MODEL_PANEL),
]
ModelPath = Annotated[
    Path | None,
    typer.Option("--model-path", metavar="DIR", envvar="HOSTCTL_MODEL_PATH",
                 help="Directory put on the payload's import path for --model (mounted read-only).",
                 rich_help_panel=MODEL_PANEL),
]
ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", metavar="KEY=VALUE",
                 help="Keyword argument for the model constructor; repeatable; values parsed as JSON where they "
                      "parse.", rich_help_panel=MODEL_PANEL),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print one JSON summary on stdout; human output goes to stderr."),
]
Debug = Annotated[
    bool, typer.Option("--debug", envvar="HOSTCTL_DEBUG", help="Show tracebacks and debug logs."),
]


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--model-arg {item!r} is not KEY=VALUE", "Write it like --model-arg width=16.")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        result[key.strip()] = value
    return result


# The Vitis AI image and how it is used (quantize, inspect --runtime docker, compile); defaults in the signatures
Image = Annotated[str, typer.Option(envvar="HOSTCTL_IMAGE", rich_help_panel=DOCKER_PANEL)]
CondaEnv = Annotated[str, typer.Option(envvar="HOSTCTL_CONDA_ENV", rich_help_panel=DOCKER_PANEL)]
Pull = Annotated[str, typer.Option(envvar="HOSTCTL_PULL", rich_help_panel=DOCKER_PANEL,
                                   help="missing, always or never.")]
Requirements = Annotated[Path | None, typer.Option(
    envvar="HOSTCTL_REQUIREMENTS", rich_help_panel=DOCKER_PANEL,
    help="pip requirements installed for the run, cached between runs.")]
