"""The portable quantizer: vai_q_pytorch's DPU arithmetic in plain torch, without the Vitis AI image.

It computes what pytorch_nndct computes for the DPU (DESIGN.md section 9): the same graph (torch.jit trace,
BatchNorm folded, nndct's node names), the same fix positions (diffs, per-batch history, mode, cap 12, export-time
shift adjustments), the same rounding, and with quant_opt > 0 the same cross-layer equalization and bias
correction. Modules: graph (capture, names, groups), equalize (CLE), fixpoint (rounding, diffs), engine (running).
"""

import hashlib
import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

from container_payload.graph.nndct import PARAM_OPS, Graph
from container_payload.job import FT_PORTABLE, SUPPORTED_EXPORTS

from .. import Backend, BackendError
from . import fixpoint as fxp
from .engine import Calibrator, TestModel, adjust, has_params, part_key
from .equalize import equalize
from .finetune import FastFinetune, FinetuneDoesNotFit
from .groups import quantization_graph

VERSION = "hostctl-portable-1"
QUANT_INFO = "quant_info.json"
FINETUNE_CACHE = ".fast_finetune_cache"  # layer inputs and targets on disk, removed when finetuning ends


class PortableBackend(Backend):
    name = "portable"
    default_exports = ()
    supported_exports = SUPPORTED_EXPORTS["portable"]

    def __init__(self, model: torch.nn.Module, run_dir: str, input_size: Sequence[int], *,
                 target=None, quant_opt: int = 3, warn=print) -> None:
        super().__init__(model, run_dir, input_size, target=target, quant_opt=quant_opt, warn=warn)
        self._graph: Optional[Graph] = None
        self._calib: Optional[Calibrator] = None
        self._test: Optional[TestModel] = None
        self.quant_info: Optional[dict] = None
        self.adjustments: List[str] = []
        self.bias_corr: Optional[Dict[str, Optional[List[float]]]] = None  # bias_corr.pth's content, or None
        # after fast_finetune(): the fix positions the calibration keeps, and every parameter by nndct's name as
        # nndct's param.pth holds it (on its grid, before bias correction)
        self._kept_fps: Optional[Dict[str, Dict[str, Optional[int]]]] = None
        self.finetuned_params: Optional[Dict[str, torch.Tensor]] = None
        self.finetune_report: Optional[dict] = None

    # quant_opt 0 turns off equalization and bias correction; any level above 0 keeps both
    # (pytorch_nndct/__init__.py: nndct_param_corr and nndct_equalization are switched off only for quant_opt <= 0)
    @property
    def _optimize(self) -> bool:
        return self.quant_opt > 0

    def _build(self, sample: torch.Tensor) -> Graph:
        model = self.model.eval()
        if self.target:
            self.warn("portable quantizer: --target {} is not emulated (vai_q_pytorch's target-aware checks need "
                      "the vai backend); fix positions follow the generic DPU rules".format(self.target))
        g = quantization_graph(model, sample[:1], relu6_as_relu=self._optimize)
        for note in g.notes:
            self.warn("portable quantizer: " + note)
        if g.unsupported:
            # vai_q_pytorch's parser: "The quantizer recognize new op `X` as a float operator by default."
            self.warn("portable quantizer: these ops run in float, as vai_q_pytorch runs them (the DPU cannot; "
                      "vai_q_pytorch logs them as new float operators): {}".format(", ".join(g.unsupported)))
        for node in g.nodes:
            slope = node.attrs.get("negative_slope")
            if node.op == "leaky_relu" and slope is not None and abs(slope - 0.1) > 1e-3:
                self.warn("portable quantizer: {} has negative_slope {}; like vai_q_pytorch it runs with the DPU's "
                          "0.1015625".format(node.name, slope))
        if self._optimize:
            equalize(g)
        return g

    def fast_finetune(self, batches: Callable[[], Iterable[torch.Tensor]], count: int,
                      progress: Optional[Callable[[str, int, int], None]] = None) -> None:
        """vai_q_pytorch's fast finetune (finetune.py) over the batches that batches() gives afresh each time;
        the next calibrate() keeps its fix positions and starts from its parameters, as nndct's does."""
        first = next(iter(batches()), None)
        if first is None:
            raise BackendError("fast finetune got no samples")
        g = self._graph = self._build(first.float())
        ft = FastFinetune(g, batches, count, os.path.join(self.run_dir, FINETUNE_CACHE), self.quant_opt, progress)
        try:
            ft.run()
        except FinetuneDoesNotFit as exc:
            raise BackendError(str(exc)) from exc
        params = {}
        for node in g.nodes:
            if node.name in ft.params:
                node.weight, node.bias = ft.params[node.name]
                params[node.weight_name] = node.weight
                if node.bias_name and node.bias is not None:
                    params[node.bias_name] = node.bias
        self._kept_fps = ft.fps
        self.finetuned_params = params
        self.finetune_report = ft.report
        os.makedirs(self.run_dir, exist_ok=True)
        tmp = os.path.join(self.run_dir, FT_PORTABLE + ".tmp")
        torch.save({k: v.detach().clone() for k, v in params.items()}, tmp)
        os.replace(tmp, os.path.join(self.run_dir, FT_PORTABLE))

    def calibrate(self, batches: Iterable[torch.Tensor], count: Optional[int] = None) -> None:
        for k, batch in enumerate(batches):
            batch = batch.float()
            if self._calib is None:
                if self._kept_fps is None:
                    self._graph = self._build(batch)
                self._calib = Calibrator(self._graph, bias_correction=self._optimize, fixed=self._kept_fps)
            if count is not None and k >= count:
                # batches after the announced count could move fix positions whose search has already stopped
                raise BackendError("calibration got more than the {} batches announced".format(count))
            self._calib.step(batch, None if count is None else count - k - 1)
        if self._calib is None:
            raise BackendError("calibration got no samples")
        fps = self._calib.fix_positions()
        if self._calib.invalid:
            # vai_q_pytorch: "the quantization for this tensor is ignored" (is_valid_tensor_for_quantizer)
            self.warn("portable quantizer: these outputs held inf or nan in calibration and stay unquantized, as "
                      "vai_q_pytorch leaves them: {}".format(", ".join(sorted(self._calib.invalid))))
        skipped = {n.name for n in self._graph.nodes if n.attrs.get("skip_quant")}
        missing = [k for k in self._graph.output_keys
                   if k not in fps["output"] and part_key(k, 0) not in fps["output"] and k not in skipped]
        if missing:
            raise BackendError("calibration never reached {}".format(", ".join(missing)))
        self.adjustments = adjust(self._graph, fps)
        self.quant_info = self._quant_info(fps)
        os.makedirs(self.run_dir, exist_ok=True)
        path = os.path.join(self.run_dir, QUANT_INFO)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.quant_info, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        self._test = TestModel(self._graph, fps, self._calib.test_biases())
        self.bias_corr = _bias_corr(self._graph, self._calib) if self._optimize else None
        self._calib = None  # its per-batch state is not needed any more; a new calibrate() starts afresh

    def _quant_info(self, fps: Dict[str, Dict[str, int]]) -> dict:
        g = self._graph
        params = {}
        for node in g.nodes:
            if not has_params(node):
                continue
            params[node.weight_name] = [[fxp.BIT_WIDTH, fps["param"][node.weight_name]]]
            if node.bias_name:
                params[node.bias_name] = [[fxp.BIT_WIDTH, fps["param"][node.bias_name]]]
        for name in g.null_params:
            params[name] = [[fxp.BIT_WIDTH, None]]
        # a configured output never quantized (an int tensor, a non-divisible adaptive pool) is null, as in nndct's
        parts = {n.name: len(n.attrs["out_floats"]) for n in g.nodes if n.attrs.get("out_floats")}
        outputs = {g.full(k): [[fxp.BIT_WIDTH, fp] for fp in _entries(fps["output"], k, parts.get(k))]
                   for k in g.output_keys}
        return {
            "param": params,
            "output": outputs,
            "input": {},
            "fast_finetuned": self._kept_fps is not None,
            "bias_corrected": self._optimize,
            "version": VERSION,
            # nndct hashes its own graph structure; this is the same idea over ours (names, ops, edges), so it
            # tells portable runs of different graphs apart but does not equal nndct's value
            "graph_md5": _graph_md5(g),
        }

    def load(self, quant_info: dict, bias_corr: Optional[dict], sample: torch.Tensor) -> None:
        """Test mode from a quant_info.json (and bias_corr.pth) instead of calibrate(), as nndct's test mode loads
        them; a name this graph does not have, or one it needs and does not find, is refused."""
        g = self._graph = self._build(sample.float())
        fps = {"param": {k: v[0][1] for k, v in quant_info["param"].items()}, "output": {}}
        for key, entries in quant_info["output"].items():
            name = key.split("::", 1)[-1]
            if len(entries) > 1:  # a list-valued node: one entry per tensor
                fps["output"].update((part_key(name, i), e[1]) for i, e in enumerate(entries))
            else:
                fps["output"][name] = entries[0][1]
        params = {n for node in g.nodes if has_params(node) for n in (node.weight_name, node.bias_name) if n}
        params.update(g.null_params)
        outputs = set(g.output_keys)
        named = {key.split(":", 1)[0] for key in fps["output"]}
        wrong = sorted(params.symmetric_difference(fps["param"])) + sorted(
            g.full(k) for k in outputs.symmetric_difference(named))
        if wrong:
            raise BackendError("quant_info.json does not match this model's graph: {}".format(", ".join(wrong)))
        biases = {}
        for node in g.nodes:
            corr = (bias_corr or {}).get(g.full(node.name))
            if node.op in PARAM_OPS and node.bias is not None and corr is not None:
                biases[node.name] = node.bias - torch.tensor(corr, dtype=node.bias.dtype)
        self.quant_info = quant_info
        self._test = TestModel(g, fps, biases)

    def quantized(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._test is None:
            raise BackendError("quantized() needs calibrate() first")
        return self._test

    def export(self, formats: Sequence[str], sample: torch.Tensor) -> List[str]:
        written = []
        for fmt in formats:
            if fmt not in self.supported_exports:
                raise BackendError("the portable quantizer cannot export {!r}; it can export: {}".format(
                    fmt, ", ".join(self.supported_exports) or "nothing"))
            if fmt == "torchscript":
                name = "{}_portable_int8.pt".format(type(self.model).__name__)
                module = _Wrapped(self.quantized())
                with torch.no_grad():
                    traced = torch.jit.trace(module, sample.float()[:1], check_trace=False)
                traced.save(os.path.join(self.run_dir, name))
                written.append(name)
        return written


class _Wrapped(torch.nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _bias_corr(g: Graph, calib: Calibrator) -> Dict[str, Optional[List[float]]]:
    # pytorch_nndct's export_quant_config: normalized name of every conv / dense -> bias_bak - bias.data (the float
    # bias minus the corrected one) as a list, None where the op has no bias; test mode subtracts it again
    res = {}
    for node in g.nodes:
        if node.op in PARAM_OPS:
            now = calib.bias_now.get(node.name)
            res[g.full(node.name)] = None if now is None else (calib.float_params[node.name][1] - now).tolist()
    return res


def _entries(out_fps: Dict[str, Optional[int]], key: str, count: Optional[int] = None) -> List[Optional[int]]:
    """The fix positions quant_info.json lists for output `key`: one per tensor of a list-valued node, or one for
    each of a node's `count` outputs, else one (None where it is never quantized)."""
    if count:
        return [out_fps.get(part_key(key, i)) for i in range(count)]
    parts = []
    while part_key(key, len(parts)) in out_fps:
        parts.append(out_fps[part_key(key, len(parts))])
    return parts or [out_fps.get(key)]


def _graph_md5(g: Graph) -> str:
    desc = ";".join("{}<{}".format(n.name, ",".join(p.name for p in n.parents)) for n in g.nodes)
    return hashlib.md5(desc.encode()).hexdigest()
