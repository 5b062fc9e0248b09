"""hostctl quantize"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from container_payload.job import BOARDS, BUILTIN_MODEL, EXPORT_FORMATS, FINETUNE_QUANTIZERS, QUANTIZERS
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
from hostctl.errors import UsageError
from hostctl.options import (
    DEFAULT_CONDA_ENV,
    DEFAULT_IMAGE,
    DEFAULT_INPUT_DIR,
    DEFAULT_OUTPUT_DIR,
    PULL_POLICIES,
    RUNTIMES,
    QuantizeOptions,
)
from hostctl.ui import Reporter, print_json

DOCKER = DOCKER_PANEL
QUANT = "Quantization"

EXAMPLES = """
[bold]Examples[/]

  hostctl quantize                         [dim]# tutorial layout, Vitis AI image[/]
  hostctl quantize --runtime local --quantizer portable --input-size 3 256 256
  hostctl quantize --runtime local --python /opt/vitis/bin/python \\
      --quantizer hybrid
  hostctl quantize --model mynet:Net --model-path ./src --model-arg width=16
  hostctl quantize --print-docker-cmd      [dim]# the equivalent docker run line[/]
  hostctl quantize --compile kv260         [dim]# then vai_c_xir, same container[/]
  hostctl quantize --board kv260 --dpu-strict
      [dim]# inspect first: one DPU subgraph or stop[/]
"""


def _choice(value: str, choices: tuple[str, ...], flag: str) -> str:
    if value not in choices:
        raise UsageError(f"{flag} {value!r} is not one of: {', '.join(choices)}", f"Pass one of {', '.join(choices)}.")
    return value


def _exports(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    if values == ["none"]:
        return ()
    for value in values:
        _choice(value, EXPORT_FORMATS, "--export")
    return tuple(dict.fromkeys(values))


@app.command(epilog=EXAMPLES)
def quantize(
    input_dir: Annotated[Path, typer.Option(envvar="HOSTCTL_INPUT_DIR",
                                            help="Holds state_dict.pt and quantization_samples.h5.")]
    = DEFAULT_INPUT_DIR,
    output_dir: Annotated[Path, typer.Option(envvar="HOSTCTL_OUTPUT_DIR", help="Where the results go.")]
    = DEFAULT_OUTPUT_DIR,
    input_size: InputSize = (3, 512, 512),
    num_classes: NumClasses = 7,
    calib_batch_size: Annotated[int, typer.Option(min=1, envvar="HOSTCTL_CALIB_BATCH_SIZE",
                                                  help="Calibration batch size.", rich_help_panel=QUANT)] = 8,
    calib_samples_limit: Annotated[int | None, typer.Option(
        min=1, envvar="HOSTCTL_CALIB_SAMPLES_LIMIT", help="Use the first N calibration samples.",
        rich_help_panel=QUANT)] = None,
    test_samples_limit: Annotated[int | None, typer.Option(
        "--test-samples-limit", "--quantization-samples-num-limit", min=1, envvar="HOSTCTL_TEST_SAMPLES_LIMIT",
        help="Use the first N test samples.", rich_help_panel=QUANT)] = None,
    model: ModelSpec = None,
    model_path: ModelPath = None,
    model_arg: ModelArgs = None,
    runtime: Annotated[str, typer.Option(envvar="HOSTCTL_RUNTIME", help="Where the payload runs: docker or local.")]
    = "docker",
    quantizer: Annotated[str, typer.Option(envvar="HOSTCTL_QUANTIZER", rich_help_panel=QUANT,
                                           help="auto (hybrid where pytorch_nndct imports, else portable), "
                                                "vai (nndct alone, the tutorial's flow), portable (DPU emulation, "
                                                "no nndct), hybrid (portable calibration checked and exported by "
                                                "nndct; falls back to vai if they disagree).")] = "auto",
    target: Annotated[str | None, typer.Option(envvar="HOSTCTL_TARGET", rich_help_panel=QUANT,
                                                  help="DPU target, e.g. DPUCZDX8G_ISA1_B4096 (KV260): "
                                                       "inspected first, and the xmodel's target.")] = None,
    board: Annotated[str | None, typer.Option(envvar="HOSTCTL_BOARD", rich_help_panel=QUANT,
                                              help="The DPU by its board (kv260, zcu102, zcu104, vck190, vek280, "
                                                   "v70), as --target.")] = None,
    dpu_strict: Annotated[bool, typer.Option("--dpu-strict", envvar="HOSTCTL_DPU_STRICT", rich_help_panel=QUANT,
                                             help="Stop with exit 2 before calibrating when the model would "
                                                  "compile into more than one DPU subgraph.")] = False,
    export: Annotated[list[str] | None, typer.Option(
        rich_help_panel=QUANT, help="xmodel, onnx, torchscript or none; repeatable. Default: xmodel for vai "
                                    "and hybrid, nothing for portable.")] = None,
    quant_opt: Annotated[int, typer.Option(min=0, max=3, envvar="HOSTCTL_QUANT_OPT", rich_help_panel=QUANT,
                                           help="nndct_quant_opt: 0 = no equalisation or bias correction, "
                                                "3 = nndct's default.")] = 3,
    analyze_samples: Annotated[int | None, typer.Option(
        min=0, envvar="HOSTCTL_ANALYZE_SAMPLES", rich_help_panel=QUANT, metavar="N",
        help="Portable and hybrid: measure every quantized tensor (SQNR, clipping, the error it adds alone) on "
             "the first N test samples into layers.json; 0 skips it. Default: all test samples.")] = None,
    fast_finetune: Annotated[bool, typer.Option(
        "--fast-finetune", envvar="HOSTCTL_FAST_FINETUNE", rich_help_panel=QUANT,
        help="Fast finetune (vai_q_pytorch's AdaQuant) before calibrating: each conv's weights and bias tuned "
             "against the float model's outputs; nndct's test mode loads them from param.pth.")] = False,
    finetune_samples: Annotated[int | None, typer.Option(
        min=1, envvar="HOSTCTL_FINETUNE_SAMPLES", rich_help_panel=QUANT, metavar="N",
        help="With --fast-finetune: finetune on N calibration samples. Default: all of them.")] = None,
    image: Image = DEFAULT_IMAGE,
    conda_env: CondaEnv = DEFAULT_CONDA_ENV,
    pull: Pull = "missing",
    requirements: Requirements = None,
    memory: Annotated[str | None, typer.Option(
        envvar="HOSTCTL_MEMORY", rich_help_panel=DOCKER, metavar="LIMIT",
        help="Memory limit of the payload container, e.g. 8g (no swap beyond it).")] = None,
    cpus: Annotated[float | None, typer.Option(
        envvar="HOSTCTL_CPUS", rich_help_panel=DOCKER, min=0.01, metavar="N",
        help="CPUs of the payload container, e.g. 2 or 1.5; its threads follow.")] = None,
    threads: Annotated[int | None, typer.Option(
        envvar="HOSTCTL_THREADS", min=1, metavar="N",
        help="The payload's threads. Default: the CPUs it may use, less those already busy.")] = None,
    keep_container: Annotated[bool, typer.Option(rich_help_panel=DOCKER,
                                                 help="Keep the stopped container for debugging.")] = False,
    print_docker_cmd: Annotated[bool, typer.Option(rich_help_panel=DOCKER,
                                                   help="Print an equivalent docker run command and exit.")]
    = False,
    python: Annotated[str | None, typer.Option(envvar="HOSTCTL_PYTHON",
                                                  help="Local runtime: the interpreter that runs the payload.")]
    = None,
    compile_board: Annotated[str | None, typer.Option(
        "--compile", metavar="BOARD", envvar="HOSTCTL_COMPILE", rich_help_panel=QUANT,
        help=f"Then compile the exported xmodel for BOARD ({', '.join(BOARDS)}) into OUTPUT_DIR/compiled_BOARD.")]
    = None,
    no_evaluate: Annotated[bool, typer.Option("--no-evaluate", help="Skip metrics and report.")] = False,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Quantize a model: validate inputs, run the payload (Vitis AI container or local), verify, evaluate."""
    opts = QuantizeOptions(
        input_dir=input_dir, output_dir=output_dir, input_size=tuple(input_size), num_classes=num_classes,
        calib_batch_size=calib_batch_size, calib_limit=calib_samples_limit, test_limit=test_samples_limit,
        model=model or BUILTIN_MODEL, model_path=model_path, model_args=parse_model_args(model_arg),
        runtime=_choice(runtime, RUNTIMES, "--runtime"),
        quantizer=_choice(quantizer, QUANTIZERS, "--quantizer"), image=image,
        conda_env=conda_env, pull=_choice(pull, PULL_POLICIES, "--pull"), requirements=requirements, target=target,
        keep_container=keep_container, memory=memory, cpus=cpus, threads=threads,
        python=python, exports=_exports(export), quant_opt=quant_opt,
        evaluate=not no_evaluate,
        compile_board=_choice(compile_board, tuple(BOARDS), "--compile") if compile_board else None,
        board=_choice(board.lower(), tuple(BOARDS), "--board") if board else None, dpu_strict=dpu_strict,
        analyze_samples=analyze_samples, fast_finetune=fast_finetune, finetune_samples=finetune_samples,
    )
    if opts.finetune_samples is not None and not opts.fast_finetune:
        raise UsageError("--finetune-samples needs --fast-finetune", "Add --fast-finetune, or drop "
                                                                     "--finetune-samples.")
    if opts.fast_finetune and opts.quantizer not in FINETUNE_QUANTIZERS:
        raise UsageError(f"--fast-finetune with --quantizer {opts.quantizer} is not available yet",
                         f"Use --quantizer {' or '.join(FINETUNE_QUANTIZERS)}, or drop --fast-finetune.")
    if opts.compile_board and (opts.quantizer == "portable" or (opts.exports is not None and
                                                                 "xmodel" not in opts.exports)):
        raise UsageError("--compile needs the xmodel, which only the vai quantizer exports",
                         "Use --quantizer vai or auto (in the Vitis AI image) and keep --export xmodel.")
    if opts.cpus is not None and opts.runtime != "docker":
        raise UsageError("--cpus applies to --runtime docker only", "Drop --cpus, or use --threads N to set the "
                                                                  "local payload's threads.")
    reporter = Reporter(debug=debug)
    if print_docker_cmd:
        from hostctl.runtime.docker import docker_command

        typer.echo(docker_command(opts))
        return
    from hostctl.pipeline import quantize as run_quantize

    summary = run_quantize(opts, reporter)
    if summary.compile and "skipped" not in summary.compile:
        from hostctl.compile import render_report

        render_report(summary.compile, reporter)
    if json_output:
        print_json(summary.to_dict())
    reporter.success(f"results in {summary.output_dir}")
