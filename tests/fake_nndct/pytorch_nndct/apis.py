"""torch_quantizer with the documented signature and file behaviour (DESIGN.md section 9)."""

import json
import math
import os
import sys

import torch

from pytorch_nndct import OPTIONS

_ANSI = {"NOTE": "\x1b[1;32m", "WARN": "\x1b[1;33m", "ERROR": "\x1b[1;31m"}


def _log(level, message):
    sys.stderr.write("{}[VAIQ_{}]: {}\x1b[0m\n".format(_ANSI[level], level, message))
    sys.stderr.flush()


def _fail_at(step):
    return os.environ.get("FAKE_NNDCT_FAIL") == step


def _fix_pos(tensor):
    peak = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return 12
    return max(-8, min(12, int(math.floor(math.log2(127.0 / peak)))))


def _fake_quant(tensor, fp):
    scale = 2.0 ** fp
    return torch.clamp(torch.round(tensor * scale), -128, 127) / scale


class _QuantModel(torch.nn.Module):
    """The module that callers forward: the float model with its leaf outputs fake-quantized."""

    def __init__(self, module, prefix, fix_positions=None):
        super().__init__()
        self.module = module
        self.prefix = prefix
        self.observed = {}
        self.fixed = fix_positions
        self.last_batch = None
        self._hooks = []
        for index, (_name, leaf) in enumerate(self._leaves()):
            key = "{}::nndct_{}_{}".format(prefix, type(leaf).__name__.lower(), index + 1)
            self._hooks.append(leaf.register_forward_hook(self._hook(key)))

    def _leaves(self):
        return [(n, m) for n, m in self.module.named_modules() if not list(m.children())]

    def _hook(self, key):
        def hook(_module, _inputs, output):
            if not torch.is_tensor(output):
                return output
            if self.fixed is None:
                self.observed.setdefault(key, []).append(_fix_pos(output))
                return _fake_quant(output, self.observed[key][-1])
            return _fake_quant(output, self.fixed.get(key, [[8, 12]])[0][1])
        return hook

    def forward(self, *args):
        self.last_batch = args[0].shape[0]
        return self.module(*args)


class torch_quantizer:  # noqa: N801 - the real API's name
    def __init__(self, quant_mode, module, input_args=None, state_dict_file=None, output_dir="quantize_result",
                 bitwidth=None, mix_bit=False, device=torch.device("cuda"), lstm=False, app_deploy="CV",
                 qat_proc=False, custom_quant_ops=None, quant_config_file=None, target=None):
        if quant_mode not in ("calib", "test"):
            _log("ERROR", "quant_mode must be calib or test")
            sys.exit(1)
        if device.type == "cuda" and not torch.cuda.is_available():
            _log("WARN", "CUDA is not available, change device to CPU")
        self.mode = quant_mode
        self.output_dir = output_dir
        self.input_args = input_args
        self.cls = type(module).__name__
        self.module = module
        os.makedirs(output_dir, exist_ok=True)
        _log("NOTE", "Quant config file is empty, use default quant configuration")
        _log("NOTE", "Quantization calibration process start up..." if quant_mode == "calib"
             else "Quantization test process start up...")
        with open(os.path.join(output_dir, "{}.py".format(self.cls)), "w") as f:
            f.write("# GENERATED FILE BY FAKE NNDCT\nimport torch\n\nclass {}(torch.nn.Module):\n    pass\n"
                    .format(self.cls))
        self.info_path = os.path.join(output_dir, "quant_info.json")
        fixed = None
        if quant_mode == "test":
            if not os.path.isfile(self.info_path):
                # What nndct does: log, then exit with status 0.
                _log("ERROR", "Quantization result file does not exist. Please check calibration is done or not.")
                sys.exit(0)
            with open(self.info_path) as f:
                fixed = json.load(f)["output"]
        self.quant_model = _QuantModel(module, self.cls, fixed)
        self.quant_opt = int(OPTIONS.get("nndct_quant_opt", 3))

    def export_quant_config(self):
        if self.mode != "calib":
            _log("ERROR", "export_quant_config is only for calib mode")
            return
        if _fail_at("export_quant_config"):
            _log("ERROR", "Failed to export quant config (injected)")
            return
        params = {"{}::{}".format(self.cls, name): [[8, _fix_pos(p)]] for name, p in self.module.named_parameters()}
        outputs = {}
        for key, history in self.quant_model.observed.items():
            outputs[key] = [[8, max(set(history), key=lambda v: (history.count(v), -v))]]
        info = {"param": params, "output": outputs, "input": {}, "fast_finetuned": False,
                "bias_corrected": self.quant_opt >= 2, "version": "3.5.0+fake", "graph_md5": "0" * 32}
        with open(self.info_path, "w") as f:
            json.dump(info, f, indent=2)
        if self.quant_opt >= 2:
            torch.save({}, os.path.join(self.output_dir, "bias_corr.pth"))
        _log("NOTE", "=>Exporting quant config.({})".format(self.info_path))

    def _export(self, suffix, writer):
        if self.mode != "test":
            _log("ERROR", "export is only for test mode")
            return
        if self.input_args[0].shape[0] != 1 or self.quant_model.last_batch not in (None, 1):
            _log("ERROR", "Batch size must be 1 when exporting xmodel.")
            return
        if self.quant_model.last_batch is None:
            _log("ERROR", "Forward the quantized model at least once before exporting.")
            return
        path = os.path.join(self.output_dir, "{}_int.{}".format(self.cls, suffix))
        writer(path)
        _log("NOTE", "=>Successfully convert '{}' to {}.".format(self.cls, suffix))

    def export_xmodel(self, output_dir="quantize_result", deploy_check=False, dynamic_batch=False):
        if _fail_at("export_xmodel"):
            _log("ERROR", "Failed convert graph to xmodel (injected)")
            return
        self.output_dir = output_dir
        self._export("xmodel", lambda path: open(path, "wb").write(b"FAKE-XMODEL\x00"))

    def export_torch_script(self, output_dir="quantize_result", verbose=False):
        self.output_dir = output_dir
        self._export("pt", lambda path: torch.jit.trace(self.quant_model, self.input_args).save(path))

    def export_onnx_model(self, output_dir="quantize_result", verbose=False, dynamic_batch=False, opset_version=None,
                          native_onnx=True, dump_layers=False, check_model=False, opt_graph=False):
        self.output_dir = output_dir
        self._export("onnx", lambda path: open(path, "wb").write(b"FAKE-ONNX\x00"))
