"""Quantizer backends: a name -> class registry and the small interface every backend implements.

A backend is built for one float model and one run directory, then used in this order:

    backend.calibrate(batches)      # forwards calibration batches, writes quant_info.json into run_dir
    qmodel = backend.quantized()    # a callable for test mode: float tensor [N,C,H,W] in, output out
    files = backend.export(formats, sample)   # optional deployable files; returns the names it wrote

Backends import their heavy dependencies lazily, so a registry lookup never fails on a missing package.
"""

import importlib
import sys
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from container_payload.job import EXIT_ENVIRONMENT

Warn = Callable[[str], None]


class BackendError(RuntimeError):
    """The quantizer failed in a way the user can act on; the message says how."""


class MissingInEnvironment(BackendError):
    """This Python lacks something the job needs; found before any work, reported without a traceback."""

    quiet = True
    exit_code = EXIT_ENVIRONMENT


class Backend:
    name = ""

    def __init__(self, model: torch.nn.Module, run_dir: str, input_size: Sequence[int], *,
                 target=None, quant_opt: int = 3, warn: Warn = print) -> None:
        self.model = model
        self.run_dir = run_dir
        self.input_size = tuple(input_size)
        self.target = target
        self.quant_opt = quant_opt
        self.warn = warn

    default_exports: Sequence[str] = ()
    supported_exports: Sequence[str] = ()

    def calibrate(self, batches: Iterable[torch.Tensor], count: Optional[int] = None) -> None:
        """Calibrate on batches [N, C, H, W]; count, when known, is how many there are."""
        raise NotImplementedError

    def quantized(self) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def export(self, formats: Sequence[str], sample: torch.Tensor) -> List[str]:
        raise NotImplementedError


_REGISTRY: Dict[str, str] = {
    "vai": "container_payload.backends.vai:VaiBackend",
    "portable": "container_payload.backends.portable:PortableBackend",
    "hybrid": "container_payload.backends.hybrid:HybridBackend",
}


def names() -> List[str]:
    return sorted(_REGISTRY)


def set_nndct_options(quant_opt: int) -> None:
    """pytorch_nndct reads (and strips) its --nndct_* options from sys.argv when it is first imported, so they
    must be in place before anything imports it: the vai backend, and auto-detection too."""
    flag = "--nndct_quant_opt={}".format(quant_opt)
    if flag not in sys.argv:
        sys.argv.append(flag)


def vai_available() -> bool:
    try:
        importlib.import_module("pytorch_nndct")
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def resolve(name: str, warn: Warn) -> str:
    """The concrete backend name for a requested one; 'auto' picks hybrid where pytorch_nndct imports (nndct's
    own test mode checks the portable calibration and exports), portable elsewhere."""
    if name == "auto":
        if vai_available():
            return "hybrid"
        warn("pytorch_nndct is not importable here: using the portable quantizer, which emulates the DPU's "
             "int8 arithmetic (run with --runtime docker in the Vitis AI image for the vai quantizer)")
        return "portable"
    if name not in _REGISTRY:
        raise BackendError("unknown quantizer {!r}; choose one of: auto, {}".format(name, ", ".join(names())))
    return name


def load(name: str) -> type:
    module_name, _, class_name = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
