"""The Vitis AI quantizer (pytorch_nndct), driven as DESIGN.md section 9 documents it.

nndct logs errors instead of raising them and sometimes exits 0 after one, so every step here is checked by
the files it must leave behind, never by the absence of an exception.
"""

import contextlib
import glob
import os
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import torch

from container_payload.backends import Backend, BackendError, set_nndct_options
from container_payload.job import FT_PARAM, SUPPORTED_EXPORTS

EXPORT_PATTERNS = {
    "xmodel": "{cls}_int.xmodel",
    "onnx": "{cls}_int.onnx",
    "torchscript": "{cls}_int.pt",
}


def import_nndct(quant_opt: int):
    set_nndct_options(quant_opt)
    try:
        from pytorch_nndct.apis import torch_quantizer
    except ImportError as exc:
        raise BackendError("pytorch_nndct is not importable ({}); run in the Vitis AI image with "
                           "--runtime docker, or use --quantizer portable".format(exc)) from exc
    return torch_quantizer


def fix_finetune_version_check() -> bool:
    """vai_q_pytorch 3.5's fast finetune (qproc/adaquant.py, optimize_layer_v2, nndct's default ft_mode 1) calls
    compare_torch_version('1.6.0', CmpFlag.GREATER_EQUAL), its two arguments swapped: the call returns None, so
    the map of activations it tunes through lacks hardswish and hardsigmoid, and every conv followed by one stops
    the finetune with KeyError: 'nndct_hswish' (any MobileNetV3). This puts the arguments back in order for that
    module's calls, and changes nothing else; True when nndct has that module (the real one)."""
    try:
        from pytorch_nndct.qproc import adaquant
        from pytorch_nndct.utils.torch_utils import CmpFlag
    except ImportError:
        return False
    compare = getattr(adaquant, "compare_torch_version", None)
    if compare is None or getattr(compare, "hostctl_fixed", False):
        return compare is not None

    def in_order(first, second):
        if isinstance(first, str) and isinstance(second, CmpFlag):
            first, second = second, first
        return compare(first, second)

    in_order.hostctl_fixed = True  # type: ignore[attr-defined]  # marks the wrapper, so it wraps once
    adaquant.compare_torch_version = in_order
    return True


@contextlib.contextmanager
def layer_progress(progress: Optional[Callable[[str, int, int], None]]) -> Iterator[None]:
    """nndct's fast finetune tunes its layers in a loop over tqdm(enumerate(layers), total=...) (adaquant.py);
    while it runs, that loop also reports each layer done as progress("layer", done, total)."""
    try:
        from pytorch_nndct.qproc import adaquant
    except ImportError:
        adaquant = None
    original = getattr(adaquant, "tqdm", None)
    if progress is None or original is None:
        yield
        return

    def tracked(iterable, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - tqdm's signature
        total = kwargs.get("total")
        for done, item in enumerate(original(iterable, *args, **kwargs), 1):
            yield item
            progress("layer", done, total or done)

    adaquant.tqdm = tracked
    try:
        yield
    finally:
        adaquant.tqdm = original


class VaiBackend(Backend):
    name = "vai"
    default_exports = ("xmodel",)
    supported_exports = SUPPORTED_EXPORTS["vai"]
    eval_batch_size = 8
    # True once param.pth holds fast-finetuned parameters for this run (fast_finetune() here, or a backend that
    # writes the file in nndct's format): every test-mode quantizer then loads it, as nndct requires
    finetuned = False
    _finetune_quantizer = None

    def _quantizer(self, mode: str, batch: int):
        torch_quantizer = import_nndct(self.quant_opt)
        dummy = torch.randn((batch,) + self.input_size)
        return torch_quantizer(mode, self.model, (dummy,), output_dir=self.run_dir,
                               device=torch.device("cpu"), target=self.target)

    @property
    def _class(self) -> str:
        return type(self.model).__name__

    def _require(self, name: str, step: str) -> str:
        path = os.path.join(self.run_dir, name)
        if not os.path.isfile(path):
            raise BackendError("pytorch_nndct did not write {} during {}; its [VAIQ_ERROR] lines above say why"
                               .format(name, step))
        return path

    def fast_finetune(self, batches: Callable[[], Iterable[torch.Tensor]], count: int,
                      progress: Optional[Callable[[str, int, int], None]] = None) -> None:
        """nndct's own fast finetune, the tutorial's way (vai_q_pytorch's example/mobilenetv2_fast_finetune.py):
        `quantizer.fast_finetune(run_fn, (quant_model, loader))` in calib mode, before the calibration forward
        that calibrate() then runs on the same quantizer. nndct calls run_fn twice (once with quantization off,
        caching the network's inputs and the float outputs of its last quantized nodes, once calibrating), then
        optimises each conv-like layer and saves the quant model's state_dict as param.pth; test mode reloads it
        with load_ft_param(). count is the number of batches; progress(stage, done, total) follows the two passes
        ("forward", in batches), then the layers ("layer")."""
        self._finetune_quantizer = quantizer = self._quantizer("calib", 1)
        fix_finetune_version_check()
        passes = [0]

        def run_fn(model, loader) -> None:  # the tutorial's evaluate(); nndct reads no loss from it
            for k, batch in enumerate(loader()):
                model(batch)
                if progress is not None:
                    progress("forward", passes[0] * count + k + 1, 2 * count)
            passes[0] += 1

        try:
            with layer_progress(progress):
                quantizer.fast_finetune(run_fn, (quantizer.quant_model, batches))
        except TypeError as exc:
            # adaquant.py finetune_v2: when its cache would not fit in 80% of the free memory, nndct warns
            # ("There is not enought memory for fast finetuning and this process will be ignored!") and returns
            # None where the caller unpacks two values
            if "NoneType" not in str(exc):
                raise
            raise BackendError("pytorch_nndct gave up fast finetune: its cache of {} batches would not fit in "
                               "memory (its [VAIQ_WARN] above); pass --finetune-samples N with fewer samples"
                               .format(count)) from exc
        self._require(FT_PARAM, "fast finetune")
        self.finetuned = True

    def calibrate(self, batches: Iterable[torch.Tensor], count: Optional[int] = None) -> None:
        # after fast_finetune(), the calibration forward runs on the quantizer that finetuned (as in the tutorial)
        quantizer = self._finetune_quantizer or self._quantizer("calib", 1)
        self._finetune_quantizer = None
        count = 0
        with torch.no_grad():
            for batch in batches:
                quantizer.quant_model(batch)
                count += 1
        if count == 0:
            raise BackendError("no calibration batches")
        quantizer.export_quant_config()
        self._require("quant_info.json", "calibration")

    def _test_quantizer(self, batch: int):
        quantizer = self._quantizer("test", batch)
        if self.finetuned:
            quantizer.load_ft_param()  # nndct exits with status 2 when param.pth is missing
        return quantizer

    def quantized(self) -> Callable[[torch.Tensor], torch.Tensor]:
        self._require("quant_info.json", "test")
        return self._test_quantizer(self.eval_batch_size).quant_model

    def export(self, formats: Sequence[str], sample: torch.Tensor) -> List[str]:
        # export_xmodel needs a test-mode quantizer built for, and last run with, batch size 1.
        quantizer = self._test_quantizer(1)
        with torch.no_grad():
            quantizer.quant_model(sample[:1])
        return self.export_from(quantizer, formats)

    def export_from(self, quantizer, formats: Sequence[str]) -> List[str]:
        """Exports from a test-mode quantizer built for, and last run with, batch size 1."""
        written = []
        for fmt in formats:
            before = set(glob.glob(os.path.join(self.run_dir, "*")))
            if fmt == "xmodel":
                quantizer.export_xmodel(output_dir=self.run_dir, deploy_check=False)
            elif fmt == "onnx":
                quantizer.export_onnx_model(output_dir=self.run_dir)
            elif fmt == "torchscript":
                quantizer.export_torch_script(output_dir=self.run_dir)
            name = EXPORT_PATTERNS[fmt].format(cls=self._class)
            self._require(name, "{} export".format(fmt))
            written.append(name)
            written.extend(sorted(os.path.basename(p) for p in set(glob.glob(os.path.join(self.run_dir, "*")))
                                  - before if os.path.basename(p) != name))
        model_py = "{}.py".format(self._class)
        if os.path.isfile(os.path.join(self.run_dir, model_py)):
            written.append(model_py)
        return written
