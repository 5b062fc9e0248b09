"""The options of a quantize run as one frozen value: built by the CLI (or the demo), read by the pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from container_payload.job import ARCH_ROOT, BOARDS, BUILTIN_MODEL, CompileStep, Job

DEFAULT_IMAGE = "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306"
DEFAULT_CONDA_ENV = "vitis-ai-wego-torch2"
DEFAULT_INPUT_DIR = Path("deployment/deployment_artifacts/deployment_inputs")
DEFAULT_OUTPUT_DIR = Path("deployment/deployment_artifacts/quantization_results")
RUNTIMES = ("docker", "local")
PULL_POLICIES = ("missing", "always", "never")
EVAL_BATCH = 8  # batch of the float and quantized test passes
# Options that mean something only in a container (--runtime docker): run.json of a local run leaves them out.
DOCKER_ONLY = ("image", "conda_env", "pull", "keep_container", "memory")


@dataclass(frozen=True)
class QuantizeOptions:
    input_dir: Path = DEFAULT_INPUT_DIR
    output_dir: Path = DEFAULT_OUTPUT_DIR
    input_size: tuple[int, int, int] = (3, 512, 512)
    num_classes: int = 7
    calib_batch_size: int = 8
    calib_limit: int | None = None
    test_limit: int | None = None
    model: str = BUILTIN_MODEL
    model_path: Path | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    runtime: str = "docker"
    quantizer: str = "auto"
    image: str = DEFAULT_IMAGE
    conda_env: str = DEFAULT_CONDA_ENV
    pull: str = "missing"
    requirements: Path | None = None
    target: str | None = None
    keep_container: bool = False
    memory: str | None = None  # docker memory limit for the payload container, e.g. "8g"
    python: str | None = None
    exports: tuple[str, ...] | None = None  # None: the backend's default; () for none
    quant_opt: int = 3
    evaluate: bool = True
    compile_board: str | None = None  # then compile the exported xmodel into <output-dir>/compiled_<board>
    board: str | None = None  # the DPU by its board: inspected first, and nndct's export target
    dpu_strict: bool = False  # more than one DPU subgraph on the named DPU is exit 2 before calibration
    threads: int | None = None  # the payload's threads; default: hostctl/threads.py's plan
    cpus: float | None = None  # CPUs of the payload container (the engine's NanoCPUs)
    analyze_samples: int | None = None  # layers.json on the first N test samples; None: all, 0: no analysis
    fast_finetune: bool = False  # the quantizer's fast finetune before calibrating (issue 21)
    finetune_samples: int | None = None  # fast finetune on N calibration samples; None: all of them

    def to_dict(self) -> dict[str, Any]:
        """The options as run.json records them: a local run has no image, conda env, pull policy or container."""
        skip = DOCKER_ONLY if self.runtime == "local" else ()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in skip}

    def to_job(self, state_dict: str, samples: str, run_dir: str, model_path: str | None) -> Job:
        """The payload's job, with paths as the payload sees them."""
        return Job(state_dict=state_dict, samples=samples, run_dir=run_dir, input_size=tuple(self.input_size),
                   num_classes=self.num_classes, calib_batch_size=self.calib_batch_size, eval_batch_size=EVAL_BATCH,
                   calib_limit=self.calib_limit, test_limit=self.test_limit, model=self.model, model_path=model_path,
                   model_args=dict(self.model_args), quantizer=self.quantizer, target=self.export_target(),
                   exports=self.exports, quant_opt=self.quant_opt, compile=self.compile_step(run_dir),
                   analyze_samples=self.analyze_samples, fast_finetune=self.fast_finetune,
                   finetune_samples=self.finetune_samples)

    def export_target(self) -> str | None:
        """nndct's target: --target, else --board's DPU."""
        if self.target is not None or self.board is None:
            return self.target
        from container_payload.inspector.targets import BOARDS as BOARD_TARGETS

        return BOARD_TARGETS.get(self.board.lower(), self.target)

    def compile_step(self, run_dir: str) -> CompileStep | None:
        if self.compile_board is None:
            return None
        return CompileStep(arch=f"{ARCH_ROOT}/{BOARDS[self.compile_board]}/arch.json",
                           output_dir=f"{run_dir}/{compiled_dir(self.compile_board)}", board=self.compile_board)


def compiled_dir(board: str) -> str:
    """Where quantize --compile BOARD puts the compiler's outputs, inside the output directory."""
    return f"compiled_{board}"
