"""--quantizer hybrid: the portable backend calibrates and predicts, pytorch_nndct checks and exports.

vai_q_pytorch is slow on CPU (calibration 19-187x the float forward, test mode 3-88x); the portable backend
computes the same fix positions at about 2x. So the portable backend writes quant_info.json (and bias_corr.pth)
in nndct's format and predicts every test sample, batched; then nndct builds its own test-mode model from those
files, forwards a few test samples at batch size 1, and those outputs are compared with the portable ones. If
they agree, the xmodel is exported from that nndct model. If nndct refuses the files or the outputs disagree,
run.py falls back to the full vai flow, so the user always gets nndct's own result.

Agreement: identical outputs, or the same argmax class on at least MIN_ARGMAX_AGREEMENT of the pixels compared
(a one-step rounding difference in the last layer may move a logit by 2^-fp without changing a class).
"""

import copy
import json
import os
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np
import torch

from container_payload.backends import Backend, BackendError
from container_payload.backends.portable import PortableBackend
from container_payload.backends.vai import VaiBackend, import_nndct
from container_payload.job import BIAS_CORR, FT_PARAM, QUANT_INFO

CHECK_SAMPLES = 4
MIN_ARGMAX_AGREEMENT = 0.999


@dataclass(frozen=True)
class Check:
    """nndct's test-mode outputs against the portable ones on the same samples."""

    passed: bool
    samples: int
    max_abs_diff: Optional[float]
    argmax_agreement: Optional[float]  # fraction of output pixels with the same argmax class
    tolerance: str
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


TOLERANCE = "identical outputs, or the same argmax on >= {:.1%} of pixels".format(MIN_ARGMAX_AGREEMENT)


class HybridBackend(Backend):
    name = "hybrid"
    default_exports = VaiBackend.default_exports
    supported_exports = VaiBackend.supported_exports

    def __init__(self, model: torch.nn.Module, run_dir: str, input_size: Sequence[int], *,
                 target=None, quant_opt: int = 3, warn=print) -> None:
        super().__init__(model, run_dir, input_size, target=target, quant_opt=quant_opt, warn=warn)
        import_nndct(quant_opt)  # fail before calibrating when nndct cannot check and export
        self.portable = PortableBackend(copy.deepcopy(model), run_dir, input_size, target=target,
                                        quant_opt=quant_opt, warn=warn)
        self.nndct = VaiBackend(model, run_dir, input_size, target=target, quant_opt=quant_opt, warn=warn)
        self._checked = None  # the batch-1 nndct test-mode quantizer whose outputs passed the check

    def fast_finetune(self, batches: Callable[[], Iterable[torch.Tensor]], count: int,
                      progress: Optional[Callable[[str, int, int], None]] = None) -> None:
        """The portable fast finetune; check() then writes its parameters as nndct's param.pth and has nndct's
        test mode load them with load_ft_param(), as after nndct's own."""
        self.portable.fast_finetune(batches, count, progress)

    def calibrate(self, batches: Iterable[torch.Tensor], count: Optional[int] = None) -> None:
        self.portable.calibrate(batches, count)
        info = dict(self.portable.quant_info)
        # nndct skips its graph check when the key is absent; the portable hash is not nndct's, and a different
        # value would make its test mode refuse the file
        info.pop("graph_md5", None)
        _write_atomically(os.path.join(self.run_dir, QUANT_INFO),
                          lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
        if self.portable.bias_corr is not None:
            _write_atomically(os.path.join(self.run_dir, BIAS_CORR), lambda f: torch.save(self.portable.bias_corr, f))

    def quantized(self):
        return self.portable.quantized()

    def check(self, samples: Sequence[torch.Tensor], expected: Sequence[np.ndarray]) -> Check:
        """Builds nndct's test-mode quantizer (batch 1) from the files calibrate() wrote and compares its outputs
        on samples ([1,C,H,W] each) with the portable outputs for them (expected)."""
        n = len(samples)
        try:
            quantizer = self.nndct._quantizer("test", 1)
            if self.portable.finetuned_params is not None:
                self._load_finetuned(quantizer)
        except SystemExit as exc:  # nndct exits (status 0 or 2) on a name mismatch or a bias_corr.pth it rejects
            return Check(False, 0, None, None, TOLERANCE, "pytorch_nndct's test mode refused quant_info.json or "
                         "bias_corr.pth and exited with status {}; its [VAIQ_ERROR] lines above say why"
                         .format(exc.code))
        except Exception as exc:  # noqa: BLE001 - whatever nndct raises, the fallback gives its own result
            return Check(False, 0, None, None, TOLERANCE, "pytorch_nndct's test mode failed to load the hybrid "
                         "quant_info.json: {}: {}".format(type(exc).__name__, exc))
        max_diff = 0.0
        same = total = 0
        try:
            with torch.no_grad():
                for sample, ref in zip(samples, expected):
                    got = quantizer.quant_model(sample).detach().cpu().numpy()
                    ref = np.asarray(ref).reshape(got.shape)
                    max_diff = max(max_diff, float(np.max(np.abs(got.astype(np.float64) - ref))) if got.size else 0.0)
                    if got.ndim >= 2:
                        same += int(np.sum(got.argmax(axis=1) == ref.argmax(axis=1)))
                        total += got.size // got.shape[1]
        except SystemExit as exc:
            return Check(False, 0, None, None, TOLERANCE, "pytorch_nndct exited with status {} in test mode"
                         .format(exc.code))
        except Exception as exc:  # noqa: BLE001 - as above
            return Check(False, 0, None, None, TOLERANCE, "pytorch_nndct's test mode failed: {}: {}".format(
                type(exc).__name__, exc))
        agreement = same / total if total else (1.0 if max_diff == 0 else 0.0)
        passed = n > 0 and (max_diff == 0.0 or agreement >= MIN_ARGMAX_AGREEMENT)
        reason = "" if passed else ("no test samples to compare" if n == 0 else
                                    "nndct's outputs differ from the portable ones (max abs diff {:.4g}, argmax "
                                    "agreement {:.4%}; needed: {})".format(max_diff, agreement, TOLERANCE))
        if passed:
            self._checked = quantizer
        return Check(passed, n, max_diff, agreement, TOLERANCE, reason)

    def _load_finetuned(self, quantizer) -> None:
        """param.pth as nndct's fast finetune writes it (the quant model's state_dict, every parameter on its
        grid, before bias correction), from the portable parameters by nndct's names; then load_ft_param()."""
        params = self.portable.finetuned_params
        # nndct's quant model inside the wrapper quant_model gives (RecoveryModel.inner_model): export_param saves it
        model = getattr(quantizer.quant_model, "inner_model", quantizer.quant_model)
        found = set()
        with torch.no_grad():
            for module in model.modules():
                names = getattr(module, "params_name", None) or []
                for attr, name in zip(("weight", "bias"), names):
                    value = params.get(name)
                    tensor = getattr(module, attr, None)
                    if value is not None and isinstance(tensor, torch.Tensor):
                        if tuple(tensor.shape) != tuple(value.shape):
                            raise BackendError("fast finetune: nndct's {} has shape {}, the portable one {}".format(
                                name, tuple(tensor.shape), tuple(value.shape)))
                        tensor.copy_(value.to(tensor.dtype))
                        found.add(name)
        missing = sorted(set(params) - found)
        if missing:
            raise BackendError("fast finetune: nndct's quant model has no parameter {}".format(", ".join(missing)))
        _write_atomically(os.path.join(self.run_dir, FT_PARAM),
                          lambda f: torch.save(model.state_dict(), f))
        quantizer.load_ft_param()
        self.nndct.finetuned = True

    def export(self, formats: Sequence[str], sample: torch.Tensor) -> List[str]:
        if self._checked is None:
            raise BackendError("hybrid export needs a passed check() first")
        # the check's quantizer was built for, and last run with, batch size 1, as export_xmodel requires
        return self.nndct.export_from(self._checked, formats)


def _write_atomically(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
