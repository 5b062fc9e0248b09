"""The Vitis AI quantizer (pytorch_nndct), driven as DESIGN.md section 9 documents it.

nndct logs errors instead of raising them and sometimes exits 0 after one, so every step here is checked by
the files it must leave behind, never by the absence of an exception.
"""

import glob
import os
from typing import Callable, Iterable, List, Optional, Sequence

import torch

from container_payload.backends import Backend, BackendError, set_nndct_options
from container_payload.job import SUPPORTED_EXPORTS

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


class VaiBackend(Backend):
    name = "vai"
    default_exports = ("xmodel",)
    supported_exports = SUPPORTED_EXPORTS["vai"]
    eval_batch_size = 8

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

    def calibrate(self, batches: Iterable[torch.Tensor], count: Optional[int] = None) -> None:
        quantizer = self._quantizer("calib", 1)
        count = 0
        with torch.no_grad():
            for batch in batches:
                quantizer.quant_model(batch)
                count += 1
        if count == 0:
            raise BackendError("no calibration batches")
        quantizer.export_quant_config()
        self._require("quant_info.json", "calibration")

    def quantized(self) -> Callable[[torch.Tensor], torch.Tensor]:
        self._require("quant_info.json", "test")
        return self._quantizer("test", self.eval_batch_size).quant_model

    def export(self, formats: Sequence[str], sample: torch.Tensor) -> List[str]:
        # export_xmodel needs a test-mode quantizer built for, and last run with, batch size 1.
        quantizer = self._quantizer("test", 1)
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
