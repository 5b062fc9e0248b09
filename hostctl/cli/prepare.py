"""hostctl prepare"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from container_payload.job import BUILTIN_MODEL
from hostctl.cli import app
from hostctl.cli.common import (
    Debug,
    InputSize,
    JsonOutput,
    ModelArgs,
    ModelPath,
    ModelSpec,
    NumClasses,
    parse_model_args,
)
from hostctl.errors import UsageError
from hostctl.options import DEFAULT_INPUT_DIR
from hostctl.ui import Reporter, print_json

DATA = "Dataset"
PRE = "Preprocessing"

EXAMPLES = """
[bold]Examples[/]

  hostctl prepare --dataset data/ --checkpoint runs/best.pt \\
      --input-size 3 256 256
  hostctl prepare --dataset data/ --palette colours.json \\
      --normalize imagenet --checkpoint model.pth
  hostctl prepare --dataset data/ --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 \\
      --calib-samples 500 --seed 1

A dataset holds images/NAME.png|jpg and masks/NAME.png (class index per pixel, or colours with --palette),
optionally splits/train.txt and splits/test.txt (one NAME per line); without them a seeded split is drawn.
"""


def _floats(value: str | None, flag: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", ",").split(",") if v)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a comma-separated list of numbers",
                         f"Write it like {flag} 0.485,0.456,0.406.") from None


@app.command(epilog=EXAMPLES)
def prepare(
    dataset: Annotated[Path, typer.Option(help="Folder with images/ and masks/ (and optional splits/).",
                                          rich_help_panel=DATA)],
    output_dir: Annotated[Path, typer.Option(help="Where quantization_samples.h5 and state_dict.pt go.")]
    = DEFAULT_INPUT_DIR,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Trained weights: a state_dict, a checkpoint holding one ('state_dict'/'model' keys, 'module.' or "
             "'model.' prefixes are stripped) or a pickled module. Proven to load into --model.")] = None,
    input_size: InputSize = (3, 512, 512),
    num_classes: NumClasses = 7,
    model: ModelSpec = None,
    model_path: ModelPath = None,
    model_arg: ModelArgs = None,
    palette: Annotated[Path | None, typer.Option(
        help="JSON list of mask colours, index = class: [[0,0,0],[255,0,0]] or [\"#000000\",\"#ff0000\"].",
        rich_help_panel=DATA)] = None,
    calib_samples: Annotated[int, typer.Option(min=1, help="Calibration samples drawn from the training split "
                                                           "(100 to 1000 work well).", rich_help_panel=DATA)] = 200,
    test_samples: Annotated[int | None, typer.Option(
        min=1, help="Test samples; default: all of splits/test.txt, or 20% of the dataset.",
        rich_help_panel=DATA)] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and the draws.", rich_help_panel=DATA)] = 0,
    normalize: Annotated[str | None, typer.Option(
        help="Pixel scaling: unit (0..1, the default), imagenet (0..1 then ImageNet mean/std) or none (0..255).",
        rich_help_panel=PRE)] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean subtracted after scaling, e.g. 0.5,0.5,0.5.",
                                             rich_help_panel=PRE)] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std divided by after that, e.g. 0.25,0.25,0.25.",
                                            rich_help_panel=PRE)] = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Deployment inputs from a dataset folder and a checkpoint: quantization_samples.h5 and state_dict.pt."""
    from hostctl.prepare import PrepareOptions
    from hostctl.prepare import prepare as run_prepare

    options = PrepareOptions(
        dataset=dataset, output_dir=output_dir, input_size=tuple(input_size), num_classes=num_classes,
        normalize=normalize, mean=_floats(mean, "--mean"), std=_floats(std, "--std"), palette=palette,
        calib_samples=calib_samples, test_samples=test_samples, seed=seed, checkpoint=checkpoint,
        model=model or BUILTIN_MODEL, model_path=model_path, model_args=parse_model_args(model_arg),
    )
    reporter = Reporter(debug=debug)
    try:
        result = run_prepare(options, reporter)
    finally:
        reporter.close()
    if json_output:
        print_json(result.to_dict())
    p = result.preprocessing
    reporter.table("Deployment inputs", ("", ""), [
        ("calibration samples", result.num_calibration),
        ("test samples (with labels)", result.num_test),
        ("split", result.split),
        ("preprocessing", f"(pixel x {p.scale:.6g} - {list(p.mean)}) / {list(p.std)}"),
        ("checkpoint", result.checkpoint_form or "none"),
    ])
    reporter.success(f"deployment inputs in {result.output_dir}")
    if result.model is not None:
        reporter.info(f"quantize them with the model their weights belong to (also in prepare.json):\n  "
                      f"{result.quantize_command}")
