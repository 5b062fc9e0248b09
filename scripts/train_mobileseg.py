#!/usr/bin/env python3
"""A model that needs fast finetune (issue 21): MobileSeg trained on the demo's synthetic data.

container_payload.models.mobileseg:MobileSeg (MobileNetV3-style: hardswish, squeeze-excitation, depthwise convs
with BatchNorm, an LR-ASPP-like head) is trained here on hostctl's synthetic segmentation data, the demo's
(hostctl/synthetic.py: 640 training and 128 test images of 64x64, data seed 0), then `hostctl prepare` makes its
deployment inputs (200 calibration samples drawn with seed 0, the 128 test images with labels).

The recipe is the demo's (AdamW, one-cycle schedule, 300 steps of 16, flips) at a high peak learning rate, 0.3; the
BatchNorms have torchvision's MobileNetV3 eps, 1e-3. At that rate a few hardswish channels die: their pre-activation
stays below -3, so they output exactly 0 everywhere. The depthwise conv that reads such a channel sees a constant
input, its BatchNorm's running variance falls to almost nothing, and folding the BatchNorm into the conv (as
vai_q_pytorch does before it quantizes) multiplies that channel's weights by up to 1/sqrt(eps), about 32. The dead
channel does nothing in float, but the conv's one fix position must cover its range, and the live channels of the
same conv keep a bit or less: in the committed weights, the third block's depthwise conv folds to weights up to 169,
its fix position is -1 (a step of 2), and 46 of its 72 channels lie wholly within half a step of 0; the sixth
block's, up to 100 (fix position 0), has 94 of its 120 so. Cross-layer equalization, which rescales such channels
between convs, does not cross a hardswish. So plain post-training quantization at the default settings loses several
points of mIoU (5.7 with these weights), and fast finetune, which chooses each weight's rounding and the biases
against the float layer's output (and lets the layers after such a conv make up for it), wins most of them back
(5.0). With eps 1e-5 (BatchNorm2d's default) the same dead channels fold to 300 times the rest and fix positions of
-4: fast finetune, which keeps the fix positions, won back less than half (README.md, "A model that needs it").

    python3 scripts/train_mobileseg.py --output-dir /tmp/mobileseg          # train, then prepare
    python3 scripts/train_mobileseg.py --output-dir /tmp/mobileseg \\
        --weights tests/data/mobileseg_state_dict.pt                       # the committed weights: prepare only

Training is deterministic (fixed steps, one thread, torch and data seeds), so on one kind of CPU it gives the
same weights every time; torch's float kernels differ between CPUs (AVX2, AVX-512) in the last bits, so the
weights the tests use are committed (tests/data/mobileseg_state_dict.pt, made by this script).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from container_payload.models.mobileseg import MobileSeg  # noqa: E402
from hostctl.demo import DemoConfig, _load_split, fit  # noqa: E402
from hostctl.prepare import PrepareOptions, prepare  # noqa: E402
from hostctl.synthetic import NUM_CLASSES, write_dataset  # noqa: E402
from hostctl.ui import Reporter  # noqa: E402

MODEL = "container_payload.models.mobileseg:MobileSeg"
WEIGHTS = ROOT / "tests" / "data" / "mobileseg_state_dict.pt"
DATA = DemoConfig()  # the demo's data: size 64, 640 training and 128 test images, seed 0, 200 calibration samples


@dataclass(frozen=True)
class Recipe:
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 0.3  # the one-cycle peak
    weight_decay: float = 1e-4
    seed: int = 1  # torch's: initial weights, batch order, flips (seed 0 loses 2.8 points: see README)


def make_dataset(root: Path) -> Path:
    dataset = root / "dataset"
    if not (dataset / "splits" / "test.txt").is_file():
        write_dataset(dataset, DATA.num_train, DATA.num_test, DATA.size, DATA.size, DATA.seed)
    return dataset


def train(dataset: Path, recipe: Recipe = Recipe(), log=print) -> MobileSeg:  # noqa: ANN001
    """MobileSeg trained the demo's way (hostctl.demo.fit) with this recipe."""
    images, labels = _load_split(dataset, "train", DATA, Reporter())
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = MobileSeg(num_classes=NUM_CLASSES)
    started = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % 50 == 0 or step == recipe.steps:
            log(f"step {step}/{recipe.steps}  loss {loss:.4f}  {time.perf_counter() - started:.0f} s")

    fit(model, images, labels, steps=recipe.steps, batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, weight_decay=recipe.weight_decay, generator=generator, on_step=progress)
    return model.eval()


def make_inputs(root: Path, weights: Path) -> Path:
    """Deployment inputs for the weights in root/deployment_inputs (state_dict.pt, quantization_samples.h5)."""
    inputs = root / "deployment_inputs"
    prepare(PrepareOptions(dataset=make_dataset(root), output_dir=inputs, input_size=(3, DATA.size, DATA.size),
                           num_classes=NUM_CLASSES, normalize="unit", calib_samples=DATA.calib_samples,
                           seed=DATA.seed, checkpoint=weights, model=MODEL), Reporter())
    return inputs


def quantize_command(inputs: Path, *extra: str) -> list[str]:
    return ["quantize", "--runtime", "local", "--input-dir", str(inputs), "--model", MODEL,
            "--input-size", "3", str(DATA.size), str(DATA.size), "--num-classes", str(NUM_CLASSES), *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="dataset/, deployment_inputs/ go here")
    parser.add_argument("--weights", type=Path, help="use these weights (a state_dict) instead of training")
    parser.add_argument("--save-weights", type=Path, help=f"also save the trained state_dict here (e.g. {WEIGHTS})")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    weights = args.weights
    if weights is None:
        started = time.perf_counter()
        model = train(make_dataset(args.output_dir))
        print(f"trained in {time.perf_counter() - started:.0f} s")
        weights = args.output_dir / "mobileseg_state_dict.pt"
        torch.save(model.state_dict(), weights)
        if args.save_weights:
            torch.save(model.state_dict(), args.save_weights)
        if WEIGHTS.is_file():
            committed = torch.load(WEIGHTS)
            same = all(torch.equal(v, committed[k]) for k, v in model.state_dict().items())
            print(f"{'identical to' if same else 'differs from'} the committed {WEIGHTS.relative_to(ROOT)}")
    inputs = make_inputs(args.output_dir, weights)
    print("hostctl " + " ".join(quantize_command(inputs, "--quantizer", "portable")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
