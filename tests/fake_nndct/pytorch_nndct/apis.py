"""torch_quantizer with the documented signature and file behaviour (DESIGN.md section 9)."""

import copy
import hashlib
import json
import os
import sys
import tempfile

import torch

from pytorch_nndct import OPTIONS

_ANSI = {"NOTE": "\x1b[1;32m", "WARN": "\x1b[1;33m", "ERROR": "\x1b[1;31m"}


def _log(level, message):
    sys.stderr.write("{}[VAIQ_{}]: {}\x1b[0m\n".format(_ANSI[level], level, message))
    sys.stderr.flush()


def _fail_at(step):
    return os.environ.get("FAKE_NNDCT_FAIL") == step


def _graph_md5(info):
    # nndct hashes its own graph; the fake hashes the names its graph gives the tensors (equal graphs, equal names)
    names = sorted(info["param"]) + sorted(info["output"])
    return hashlib.md5(("fake:" + ";".join(names)).encode()).hexdigest()


def _portable(module, input_args, quant_opt, run_dir):
    # The fake's arithmetic is the portable backend's, which emulates nndct's exactly: so the hybrid path's check
    # passes here as it does against the real quantizer, and FAKE_NNDCT_FAIL=test_outputs makes it fail.
    from container_payload.backends.portable import PortableBackend

    return PortableBackend(copy.deepcopy(module), run_dir, tuple(input_args[0].shape[1:]), quant_opt=quant_opt,
                           warn=lambda message: _log("WARN", message))


class _QuantModel(torch.nn.Module):
    """The module that callers forward: calib mode records the batches, test mode runs the quantized model."""

    def __init__(self, module, quantized=None):
        super().__init__()
        self.module = module
        self.quantized = quantized
        self.batches = []
        self.last_batch = None
        self.quant_off = False  # nndct's NoQuant() while fast finetune caches the float tensors
        self.unloaded_finetune = False  # test mode of a fast-finetuned calibration, before load_ft_param()

    def forward(self, *args):
        x = args[0]
        self.last_batch = x.shape[0]
        if self.quantized is not None and self.unloaded_finetune:
            # stricter than nndct, which defines this check (features_check) but never calls it, and then runs the
            # finetuned fix positions with the float parameters: the fake stops, so an adapter that forgets
            # load_ft_param() fails its tests
            _log("ERROR", "[QUANTIZER_TORCH_FAST_FINETUNE] Fast finetuned parameters are not loaded. Call "
                 "load_ft_param to load them.")
            sys.exit(2)
        if self.quantized is None:
            if not self.quant_off:
                self.batches.append(x.detach().clone())
            return self.module(*args)
        out = self.quantized(x)
        if _fail_at("test_outputs"):
            out = torch.roll(out, 1, dims=1)  # every class moves: the hybrid check must see it
        return out


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
        # nndct's quant model is its own module (generated code, parameters loaded from the float model): fast
        # finetune changes it, never the caller's module
        self.module = copy.deepcopy(module)
        self.quant_opt = int(OPTIONS.get("nndct_quant_opt", 3))
        os.makedirs(output_dir, exist_ok=True)
        _log("NOTE", "Quant config file is empty, use default quant configuration")
        _log("NOTE", "Quantization calibration process start up..." if quant_mode == "calib"
             else "Quantization test process start up...")
        with open(os.path.join(output_dir, "{}.py".format(self.cls)), "w") as f:
            f.write("# GENERATED FILE BY FAKE NNDCT\nimport torch\n\nclass {}(torch.nn.Module):\n    pass\n"
                    .format(self.cls))
        self.info_path = os.path.join(output_dir, "quant_info.json")
        self.bias_corr_path = os.path.join(output_dir, "bias_corr.pth")
        self.param_path = os.path.join(output_dir, "param.pth")  # nndct: param_file = output_dir + "/param"
        self.fast_finetuned = False
        quantized = None
        if quant_mode == "test":
            quantized = self._load_test_mode()
        self.quant_model = _QuantModel(self.module, quantized)
        self.quant_model.unloaded_finetune = self.fast_finetuned

    def _load_test_mode(self):
        """What nndct's test mode does with the calibration files (torchquantizer.py, quant_config_imp.py)."""

        if not os.path.isfile(self.info_path):
            # What nndct does: log, then exit with status 0.
            _log("ERROR", "Quantization result file does not exist. Please check calibration is done or not.")
            sys.exit(0)
        bias_corr = None
        if self.quant_opt > 0:  # nndct_param_corr is on: test mode reloads bias_corr.pth or exits
            if not os.path.isfile(self.bias_corr_path):
                _log("ERROR", "[BIAS_CORRECTION] Bias correction result file does not exist. Please check "
                     "calibration with bias correction is done or not.")
                sys.exit(2)
            bias_corr = torch.load(self.bias_corr_path)
        with open(self.info_path) as f:
            info = json.load(f)
        self.fast_finetuned = bool(info.get("fast_finetuned"))
        self._test_files = (info, bias_corr)
        return self._test_model(info, bias_corr)

    def _test_model(self, info, bias_corr):
        from container_payload.backends import BackendError

        backend = _portable(self.module, self.input_args, self.quant_opt, self.output_dir)
        try:
            backend.load(info, bias_corr, self.input_args[0])
            # nndct's _check_graph_md5: skipped when the file has no graph_md5 key
            if "graph_md5" in info and info["graph_md5"] != _graph_md5(info):
                raise BackendError("graph_md5 {} is not this graph's".format(info["graph_md5"]))
        except BackendError as exc:
            # nndct refuses names its graph lacks and a different graph_md5, logs, and exits with status 0; the fake
            # also refuses names it does not know (real nndct ignores extra ones), to catch a naming drift early
            _log("ERROR", "[CALIB_RESULT_MISMATCH] Node name mismatch is found when loading quantization steps of "
                 "tensors. ({})".format(exc))
            sys.exit(0)
        if info.get("bias_corrected") and bias_corr is None:
            _log("WARN", "[BIAS_CORRECTION] Bias correction file is not loaded. Set command line option "
                 "\"--nndct_param_corr\" to load it.")
        return backend.quantized()

    def fast_finetune(self, run_fn, run_args):
        """nndct's signature (apis.py) and files (qproc/base.py finetune, adaquant.py finetune_v2), not its
        algorithm: run_fn(*run_args) forwards the finetune samples once with quantization off (nndct caches the
        network's inputs and the float outputs) and once calibrating; then, where nndct tunes every conv-like
        layer, the fake tunes one bias: the last biased conv's, moved by the mean difference between the float
        and the quantized model's outputs per channel (least squares for that bias alone). It saves the quant
        model's state_dict as param.pth, and quant_info.json then says fast_finetuned."""
        if self.mode == "test":
            _log("WARN", "[QUANTIZER_TORCH_FINETUNE_IGNORED] Finetune function will be ignored in test mode!")
            return
        _log("NOTE", "=>Preparing data for fast finetuning module parameters ...")
        start = len(self.quant_model.batches)
        self.quant_model.quant_off = True
        try:
            with torch.no_grad():
                run_fn(*run_args)
        finally:
            self.quant_model.quant_off = False
        if _fail_at("fast_finetune_memory"):
            # adaquant.py cache_net_inpouts: warns and returns None, which finetune_v2 then unpacks
            _log("WARN", "[QUANTIZER_TORCH_MEMORY_SHORTAGE] There is not enought memory for fast finetuning and "
                 "this process will be ignored!.Try to use a smaller calibration dataset.")
            net_inputs, net_outputs = None  # noqa: F841 - nndct's own unpacking, and its TypeError
        _log("NOTE", "=>Find initial quantization steps for fast finetuning...")
        with torch.no_grad():
            run_fn(*run_args)
        batches = self.quant_model.batches[start:]
        del self.quant_model.batches[start:]  # nndct clears the calibration history after finetuning
        if not batches:
            _log("ERROR", "fast finetune: run_fn forwarded nothing")
            return
        _log("NOTE", "=>Fast finetuning module parameters for better quantization accuracy...")
        convs = [m for m in self.module.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
        if convs:
            with tempfile.TemporaryDirectory() as scratch:
                # nndct turns bias correction off while it finetunes (adaquant.py AdaQuant.__enter__)
                backend = _portable(self.module, self.input_args, 0, scratch)
                backend.calibrate(iter(batches))
                quantized = backend.quantized()
                with torch.no_grad():
                    diff = sum((self.module(b) - quantized(b)).mean(dim=(0, 2, 3)) for b in batches) / len(batches)
                    if diff.shape == convs[-1].bias.shape:
                        convs[-1].bias += diff
        self.fast_finetuned = True
        torch.save(self.quant_model.state_dict(), self.param_path)
        _log("NOTE", "=>Export fast finetuned parameters ...")
        _log("NOTE", "=>Exporting quant model parameters.({})".format(self.param_path))

    def load_ft_param(self):
        """torchquantizer.py load_param: test mode only; exits with status 2 without the file or the flag."""
        if self.mode != "test":
            return
        _log("NOTE", "=>Loading quant model parameters.({})".format(self.param_path))
        if not os.path.isfile(self.param_path) or not self.fast_finetuned:
            _log("ERROR", "[QUANTIZER_TORCH_FAST_FINETINE] Fast finetuned parameter file does not exist. Please "
                 "check calibration with fast finetune is done or not.")
            sys.exit(2)
        self.quant_model.load_state_dict(torch.load(self.param_path))
        self.quant_model.quantized = self._test_model(*self._test_files)
        self.quant_model.unloaded_finetune = False

    def export_quant_config(self):
        if self.mode != "calib":
            _log("ERROR", "export_quant_config is only for calib mode")
            return
        if not self.quant_model.batches:
            _log("ERROR", "Quantization is not performed completely, check if module FORWARD function is called!")
            return
        if _fail_at("export_quant_config"):
            _log("ERROR", "Failed to export quant config (injected)")
            return
        with tempfile.TemporaryDirectory() as scratch:
            backend = _portable(self.module, self.input_args, self.quant_opt, scratch)
            backend.calibrate(iter(self.quant_model.batches))
        info = dict(backend.quant_info, version="3.5.0+fake", fast_finetuned=self.fast_finetuned)
        info["graph_md5"] = _graph_md5(info)
        with open(self.info_path, "w") as f:
            json.dump(info, f, indent=2)
        if backend.bias_corr is not None:
            torch.save(backend.bias_corr, self.bias_corr_path)
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


class Inspector(object):
    """pytorch_nndct.apis.Inspector with the documented signature and file (DESIGN.md section 11). The real
    default Inspector asks the compiler's closed pattern library (xcompiler), which is not here: this fake answers
    with hostctl's emulation of the rule-based Inspector, and says so on stderr. It writes inspect_<target>.txt
    in hardware_v3's layout (each output's shape joined by commas, the source range as the traced stack), so that
    what reads the real file is tried on that layout."""

    def __init__(self, name_or_fingerprint):
        self._target = name_or_fingerprint
        _log("NOTE", "Inspector is on.")

    def inspect(self, module, input_args, device=torch.device("cuda"), output_dir="quantize_result", verbose_level=1,
                image_format=None):
        from container_payload.inspector import targets
        from container_payload.inspector.run import inspect

        _log("NOTE", "=>Start to inspect model...")
        _log("WARN", "fake Inspector (hostctl's test stand-in for pytorch_nndct): hostctl's rule-based emulation "
                     "answers here, not the compiler's patterns")
        if isinstance(input_args, torch.Tensor):
            input_args = (input_args,)
        target = targets.resolve(self._target)
        report, _ = inspect(module, tuple(input_args[0].shape[1:]), target)
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "inspect_{}.txt".format(self._target)), "w") as f:
            f.write(_v3_text(report, target))
        if image_format is not None:
            raise NotImplementedError("the fake Inspector draws no image")
        _log("NOTE", "=>Finish inspecting.")


def _v3_text(report, target):
    sep = "=" * 160
    outs = {}
    for node in report["nodes"]:
        for parent in node["inputs"]:
            outs.setdefault(parent, []).append(node["name"])
    cpu = [n for n in report["nodes"] if n["device"] == "cpu"]
    lines = ["# The 'inspect.txt' file is used to show all the details of each operation in NN model.", sep,
             "target info:", sep, target.name, "", sep, "inspection summary:", sep]
    if cpu:
        lines.append("The operators assigned to the CPU are as follows:")
        lines += ["{}  {}  {}".format(n["name"], n["op"], n["constraint"]) for n in cpu]
    else:
        lines.append("All the operators are assigned to the DPU.")
    lines += [sep, "graph name: {}".format(report["nodes"][0]["name"].split("::")[0])]
    for n in report["nodes"]:
        lines += [sep, "node name: {}".format(n["name"]), "input nodes: {}".format(n["inputs"]),
                  "output nodes: {}".format(outs.get(n["name"], [])), "op type: {}".format(n["op"]),
                  "outputs shape: {}".format(",".join(str(s) for s in n["shape"])), "op attributes:",
                  "assigned device: {}".format(n["device"])]
        if n["constraint"]:
            lines.append("hardware constraints: {}".format(n["constraint"]))
        if n["messages"]:
            lines += ["node messages:"] + ["  {}".format(m) for m in n["messages"]]
        if n["source"]:
            path, _, line = n["source"].rpartition(":")
            torch_frame = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "module.py")
            lines += ["source range:", "{}(1501): _call_impl".format(torch_frame), "{}({}): forward".format(path, line)]
    return "\n".join(lines) + "\n"
