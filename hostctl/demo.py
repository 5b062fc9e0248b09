"""hostctl demo: the whole flow on generated data, so a new user sees a result in minutes without a dataset.

    synthetic dataset (images/ + masks/ + splits/) -> train the built-in Unet on the CPU -> checkpoint
        -> prepare -> quantize (portable quantizer) -> metrics.json + report/

Training reads its samples back through prepare's own loader, so the model sees exactly the preprocessing that
the deployment inputs get. It runs a fixed number of steps on one thread, and nothing it does depends on the
clock: a busy or slow machine takes longer but trains the same model to the same accuracy. (A time limit used to
cut training short on busy machines: float mIoU 0.64 instead of 0.95.) One thread because two spinning OpenMP
threads beside another CPU-bound process cost 2-3x the CPU time per step (measured: 0.30 s per step on one
thread, busy or not; 0.77 s on two when busy).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from container_payload.job import BOARDS
from container_payload.models.unet import Unet
from hostctl.errors import EnvironmentProblem, UsageError
from hostctl.options import DEFAULT_IMAGE, RUNTIMES, QuantizeOptions
from hostctl.prepare import (
    PrepareOptions,
    load_pair,
    prepare,
    preprocessing_for,
    quantize_command,
    scan_dataset,
)
from hostctl.report import REPORT_DIR
from hostctl.synthetic import NUM_CLASSES, write_dataset

MARKER = ".hostctl-demo"
DATASET, CHECKPOINT, INPUTS, RESULTS = "dataset", "checkpoint.pt", "deployment_inputs", "quantization_results"


@dataclass(frozen=True)
class DemoConfig:
    size: int = 64  # square input: 3 x size x size
    num_train: int = 640
    num_test: int = 128
    width: int = 16  # Unet channels at the top level
    depth: int = 3
    steps: int = 200  # float mIoU 0.95 (0.94 at 150 steps, 0.97 at 300), about 60 s of CPU time
    batch_size: int = 16
    learning_rate: float = 5e-3
    calib_samples: int = 200
    seed: int = 0

    @property
    def model_args(self) -> dict[str, Any]:
        return {"width": self.width, "depth": self.depth}


FULL = DemoConfig()
# For tests and smoke checks: same flow, a fraction of the work; its accuracy is not a target.
FAST = replace(FULL, size=48, num_train=96, num_test=24, width=8, depth=2, steps=120, calib_samples=32)


@dataclass(frozen=True)
class DemoResult:
    output_dir: Path
    dataset_dir: Path
    checkpoint: Path
    inputs_dir: Path
    results_dir: Path
    steps: int
    final_loss: float
    timings: dict[str, float]
    metrics: dict[str, Any] | None
    report_files: list[Path]
    compile: dict[str, Any] | None = None
    model: dict[str, Any] | None = None  # what the checkpoint's weights belong to, as prepare.json records it
    quantize_command: str = ""  # the quantize run the demo made, to run again on its inputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir), "dataset_dir": str(self.dataset_dir),
            "checkpoint": str(self.checkpoint), "inputs_dir": str(self.inputs_dir),
            "results_dir": str(self.results_dir), "steps": self.steps, "final_loss": self.final_loss,
            "timings": self.timings, "metrics": self.metrics, "report_files": [str(p) for p in self.report_files],
            "compile": self.compile, "model": self.model, "quantize_command": self.quantize_command,
        }


def run_demo(output_dir: Path, reporter, runtime: str = "local", fast: bool = False,  # noqa: ANN001
             config: DemoConfig | None = None, image: str = DEFAULT_IMAGE, pull: str = "missing",
             compile_board: str | None = None) -> DemoResult:
    """compile_board: also compile for that board; the quantizer is then `auto` (vai exports the xmodel where
    pytorch_nndct imports) instead of the faster `portable`."""
    from hostctl.pipeline import quantize

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r} is not one of: {', '.join(RUNTIMES)}")
    if compile_board is not None and compile_board not in BOARDS:
        raise UsageError(f"--compile {compile_board!r} is not one of: {', '.join(BOARDS)}")
    if runtime == "docker":
        # Find out now, not after minutes of training, whether the engine and the image are there.
        from hostctl.runtime import offer_local_runtime
        from hostctl.runtime.docker import connect, ensure_image

        try:
            ensure_image(connect(), image, pull, reporter)
        except EnvironmentProblem as problem:
            offer_local_runtime(problem)
            raise
    config = config or (FAST if fast else FULL)
    _claim(output_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    dataset = output_dir / DATASET
    shutil.rmtree(dataset, ignore_errors=True)  # ours (the directory carries the demo marker): start afresh
    total = config.num_train + config.num_test
    with reporter.task("dataset", total, "Generating the dataset", unit="images"):
        write_dataset(dataset, config.num_train, config.num_test, config.size, config.size, config.seed,
                      on_sample=lambda: reporter.update_task("dataset", advance=1))
    timings["dataset"] = time.perf_counter() - started

    t0 = time.perf_counter()
    checkpoint = output_dir / CHECKPOINT
    steps, loss = train(dataset, checkpoint, config, reporter)
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    input_size = (3, config.size, config.size)
    inputs = output_dir / INPUTS
    prepared = prepare(PrepareOptions(dataset=dataset, output_dir=inputs, input_size=input_size,
                                      num_classes=NUM_CLASSES, normalize="unit", calib_samples=config.calib_samples,
                                      seed=config.seed, checkpoint=checkpoint, model_args=config.model_args), reporter)
    reporter.close()
    timings["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    quantizer = "auto" if compile_board else "portable"
    first = ["--runtime", runtime, "--quantizer", quantizer]
    if runtime == "docker":
        first += ["--image", image]
    last = ["--output-dir", str(output_dir / RESULTS)] + (["--compile", compile_board] if compile_board else [])
    command = quantize_command(inputs, input_size, NUM_CLASSES, prepared.model, first=first, last=last)
    summary = quantize(QuantizeOptions(input_dir=inputs, output_dir=output_dir / RESULTS, input_size=input_size,
                                       num_classes=NUM_CLASSES, model_args=config.model_args, runtime=runtime,
                                       quantizer=quantizer, image=image, pull=pull,
                                       compile_board=compile_board), reporter)
    timings["quantize"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    report = summary.output_dir / REPORT_DIR
    return DemoResult(
        output_dir=output_dir, dataset_dir=dataset, checkpoint=checkpoint, inputs_dir=inputs,
        results_dir=summary.output_dir, steps=steps, final_loss=loss, timings=timings, metrics=summary.metrics,
        report_files=sorted(report.iterdir()) if report.is_dir() else [], compile=summary.compile,
        model=prepared.model, quantize_command=command,
    )


def _claim(output_dir: Path) -> None:
    """Use output_dir only if it is new, empty or an earlier demo's: the demo replaces what it wrote there."""
    if output_dir.exists():
        if not output_dir.is_dir():
            raise UsageError(f"{output_dir} exists and is not a directory", "Choose another --output-dir.")
        if any(output_dir.iterdir()) and not (output_dir / MARKER).exists():
            raise UsageError(f"{output_dir} is not empty and was not made by hostctl demo",
                             "Choose a new or empty --output-dir; the demo replaces what it finds there.")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MARKER).write_text("made by hostctl demo; the next demo run may replace this directory's contents\n")


def train(dataset: Path, checkpoint: Path, config: DemoConfig, reporter) -> tuple[int, float]:  # noqa: ANN001
    """Train the built-in Unet; save {'model': state_dict, ...} like a training script would. Returns (steps, loss)."""
    images, labels = _load_split(dataset, "train", config, reporter)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Unet(num_classes=NUM_CLASSES, **config.model_args)
    started = time.perf_counter()
    with reporter.task("train", config.steps, "Training the demo Unet", unit="steps"):
        loss_value = fit(model, images, labels, steps=config.steps, batch_size=config.batch_size,
                         learning_rate=config.learning_rate, weight_decay=1e-4, generator=generator,
                         on_step=lambda step, loss: reporter.update_task("train", done=step))
    reporter.close()
    torch.save({"model": model.state_dict(), "steps": config.steps, "loss": loss_value}, checkpoint)
    reporter.info(f"trained {config.steps} steps in {time.perf_counter() - started:.1f} s, final loss {loss_value:.4f}")
    return config.steps, loss_value


def fit(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, batch_size: int,
        learning_rate: float, weight_decay: float, generator: torch.Generator,
        on_step: Callable[[int, float], None]) -> float:
    """Train `model` for `steps` steps the demo's way: AdamW on a one-cycle schedule, shuffled batches (from
    `generator`) with random horizontal flips, cross-entropy, one thread (the same steps whatever the load, and
    faster beside other work). on_step(step, loss) after each step; returns the last loss. (The model of issue 21
    is trained the same way: scripts/train_mobileseg.py.)"""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps,
                                                   pct_start=0.15)
    model.train()
    step, loss_value = 0, float("nan")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while step < steps:
            order = torch.randperm(len(images), generator=generator)
            for first in range(0, len(order) - batch_size + 1, batch_size):
                batch = order[first:first + batch_size]
                x, y = images[batch], labels[batch]
                if torch.rand(1, generator=generator).item() < 0.5:  # horizontal flips: a cheap augmentation
                    x, y = x.flip(3), y.flip(2)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                loss_value = loss.item()
                on_step(step, loss_value)
                if step >= steps:
                    break
    finally:
        torch.set_num_threads(threads)
    return loss_value


def _load_split(dataset: Path, split: str, config: DemoConfig,
                reporter) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """A split's samples as tensors, loaded with prepare's own loader and unit scaling."""
    options = PrepareOptions(dataset=dataset, input_size=(3, config.size, config.size), num_classes=NUM_CLASSES)
    pairs = scan_dataset(dataset, reporter)
    preprocessing = preprocessing_for("unit", None, None, 3)
    stems = (dataset / "splits" / f"{split}.txt").read_text().split()
    loaded = [load_pair(pairs[stem], preprocessing, None, options) for stem in stems]
    images = torch.from_numpy(np.stack([sample for sample, _ in loaded]))
    labels = torch.from_numpy(np.stack([label for _, label in loaded]).astype(np.int64))
    return images, labels
