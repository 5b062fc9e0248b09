"""Where accuracy is lost (issue 21): every quantized tensor of a portable run against the float model.

For each tensor of quant_info.json (nndct's names: the outputs, and the weights and biases), on the analysed test
samples:
- sqnr_db: 10 log10(sum f^2 / sum (q - f)^2), f the float model's tensor and q the quantized model's (the whole
  model quantized, so the error that reaches the tensor from upstream counts too), summed over all samples. For a
  parameter, q is what test mode computes with: the weight on its grid, the bias corrected (quant_opt > 0) and
  then put on its grid.
- clipped: the fraction of the float model's values outside the fix position's range, x * 2^fp outside
  [-128.5, 127.5): the values that the quantizer saturates at -128 or 127 instead of rounding.
- own error: the model's output with this tensor alone quantized, everything else float, against the float
  output: own_sqnr_db (the output's SQNR) and own_changed (the fraction of output positions, pixels for a
  segmentation net, whose argmax class changes). Measured exactly, not by linearisation: the float run is forked
  where the tensor is made, the fork quantizes that one tensor and runs the rest of the network, so only the ops
  after the tensor run once more per tensor. That costs about half a forward per tensor, so it is measured on
  the first own_samples analysed samples only, chosen so that it costs about OWN_BUDGET float passes over all the
  analysed samples (estimated from the per-op times of one float forward; the time taken is recorded).

The float model is the captured graph run in float (BatchNorm folded and, with quant_opt > 0, equalized, as
nndct quantizes it), its parameters captured afresh from the user's model (reference()): the same function as
the user's model up to float rounding, whatever changed the quantization graph's parameters since. The quantized
model is the test mode model that made the predictions (its integer outputs scaled back for the comparison).
"""

import json
import math
import os
import re
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from container_payload.graph.nndct import Graph, Node, capture

from . import fixpoint as fxp
from .engine import Runner, TestModel, has_params
from .equalize import equalize

SCHEMA = 1
OWN_BUDGET = 1.0  # float passes over the analysed samples that the own-error forks may cost
WORST = 5  # tensors named in run.json and the terminal

MEASURES = {
    "sqnr_db": "10 log10(sum f^2 / sum (q - f)^2) over the analysed samples: f the float model's tensor, q the "
               "quantized model's (every tensor quantized, so upstream error counts); null when q equals f",
    "clipped": "fraction of the float model's values x with x * 2^fix_pos outside [-128.5, 127.5), saturated by "
               "the fix position's range",
    "own_sqnr_db": "SQNR in dB of the model's output with this tensor alone quantized (everything else float), "
                   "against the float output, over the first own_error.samples samples; null when not measured "
                   "or without error",
    "own_changed": "fraction of output positions (pixels) whose argmax class changes when this tensor alone is "
                   "quantized",
    "own_noise_ms": "mean squared error of the model's output that this tensor alone adds (the ranking key: "
                    "highest costs most)",
    "signal_ms, noise_ms": "mean of f^2 and of (q - f)^2 for the tensor",
    "depth": "position along the network (execution order of the node that makes the tensor, 0 = input)",
}
PARAMS_NOTE = ("weights and biases: q is the test-mode value (biases corrected with quant_opt > 0, then quantized); "
               "their own error quantizes that one parameter of its op")


class _Entry:
    """One quantized tensor and its running sums."""

    def __init__(self, name: str, kind: str, node: Node, fp: Optional[int], index: Optional[int] = None) -> None:
        self.name, self.kind, self.node, self.fp, self.index = name, kind, node, fp, index
        self.signal = self.noise = 0.0
        self.count = 0
        self.clipped = 0
        self.own_signal = self.own_noise = 0.0
        self.own_count = 0
        self.own_changed = 0
        self.own_positions = 0
        self.own_measured = False

    def add(self, f: torch.Tensor, q: torch.Tensor) -> None:
        # (same shapes, any memory layouts: the test-mode model may run channels-last)
        f32 = f.detach().float()
        self.noise += _sum_sq(q.detach().float() - f32)
        self.signal += _sum_sq(f32)
        self.count += f32.numel()
        if self.fp is not None:
            hi, lo = (fxp.QMAX + 0.5) * 2.0 ** -self.fp, (fxp.QMIN - 0.5) * 2.0 ** -self.fp
            least, most = torch.aminmax(f32)
            # most tensors have nothing to count; a side without values beyond it is not counted
            if float(most) >= hi:
                self.clipped += int(torch.count_nonzero(f32 >= hi))
            if float(least) < lo:
                self.clipped += int(torch.count_nonzero(f32 < lo))

    def add_own(self, y: torch.Tensor, ref: torch.Tensor, ref_classes: Optional[torch.Tensor]) -> None:
        self.own_measured = True
        self.own_noise += _sum_sq(y.float() - ref.float())
        self.own_signal += _sum_sq(ref.float())
        self.own_count += ref.numel()
        if ref_classes is not None:
            self.own_changed += changed(y, ref_classes)
            self.own_positions += ref_classes.numel()


def _sum_sq(t: torch.Tensor) -> float:
    """The sum of t's squared elements (one pass, no copy)."""
    return float(torch.linalg.vector_norm(t)) ** 2


def classes(y: torch.Tensor) -> Optional[torch.Tensor]:
    """The argmax along dim 1 (the class of each pixel), None for an output without classes. (Through a
    channels-last copy: argmax along a strided dim 1 is several times slower.)"""
    if y.dim() < 2 or y.shape[1] < 2:
        return None
    return y.movedim(1, -1).contiguous().argmax(-1).unsqueeze(1)


def changed(y: torch.Tensor, ref_classes: torch.Tensor) -> int:
    """How many positions of y no longer hold their reference class as the largest value (an argmax that
    moved; a tie with the reference class does not count)."""
    return int(torch.count_nonzero(y.gather(1, ref_classes) < y.amax(1, keepdim=True)))


def sqnr_db(signal: float, noise: float) -> Optional[float]:
    """10 log10(signal / noise); None without noise (or without signal: no ratio to give)."""
    if noise <= 0.0 or signal <= 0.0 or not math.isfinite(noise):
        return None
    return 10.0 * math.log10(signal / noise)


def reference(model: torch.nn.Module, sample: torch.Tensor, g: Graph,
              optimize: bool) -> Tuple[Dict[str, str], Optional[Dict[str, Tuple[torch.Tensor, Any]]]]:
    """What the analysis reads off a capture of the user's model made afresh, the way nndct traces it
    (graph.capture with nndct_names): node name -> the dotted path of the module that made it (`stem.2`; "" for
    an op in a forward's own code), and node name -> the float (weight, bias) as nndct quantizes them (BatchNorm
    folded, equalized when optimize), from the model itself: the float reference stays the user's model even where
    the quantization graph's parameters were changed since (fast finetune). ({}, None) when that capture does not
    give the same nodes."""
    try:
        named = capture(model, sample[:1], relu6_as_relu=optimize, nndct_names=True, check_forward=False)
        if [(n.name, n.op) for n in named.nodes] != [(n.name, n.op) for n in g.nodes]:
            return {}, None
        if optimize:
            equalize(named)
    except Exception:  # noqa: BLE001 - a help for reading: without it, the source lines and g's own weights remain
        return {}, None
    modules = {}
    for n in named.nodes:
        scope = n.nndct_name.split("::", 1)[-1].rsplit("/", 1)[0] if "/" in n.nndct_name else ""
        modules[n.name] = ".".join(re.findall(r"\[([^\[\]]+)\]", scope))
    params = {n.name: (n.weight, n.bias) for n in named.nodes if has_params(n)}
    return modules, params


def _keep(node, val, act):
    return val if act is None else act(val)


class LayerAnalysis:
    """The measures of every quantized tensor, accumulated batch by batch (add), then as a document (result)."""

    def __init__(self, g: Graph, test: TestModel, modules: Optional[Dict[str, str]] = None,
                 own_budget: float = OWN_BUDGET, float_params: Optional[Dict[str, Tuple[torch.Tensor, Any]]] = None
                 ) -> None:
        """float_params: node name -> the float (weight, bias) of the float model (reference()); g's own where
        not given."""
        self.g = g
        self.fparams = float_params or {}
        # the quantized side is the test-mode model that predicted (its shortcuts give the same bits; where it
        # keeps an output as integers, the comparison scales them back); forks quantize one float tensor the
        # general way, and take their quantized parameters from the general model
        self.q = test
        self.qg = test.general()
        self.f = Runner(g)
        # forks share the float run's values: nothing may be written in place
        self.f.may_overwrite = frozenset()
        self.modules = modules or {}
        self.own_budget = own_budget
        self.nodes = {n.name: n for n in g.nodes}
        self.step_of = {s.node.name: i for i, s in enumerate(g.steps) if s.node is not None}
        self.entries: Dict[str, _Entry] = {}
        out_fp = self.q.out_fp
        for key in g.output_keys:
            node = self.nodes[key]
            if node.attrs.get("list_out") or node.attrs.get("out_floats"):
                continue  # one entry per tensor, made as they are met (part keys)
            self.entries[key] = _Entry(key, "input" if node.op == "input" else "activation", node, out_fp.get(key))
        self.param_nodes: Dict[str, Tuple[Node, str]] = {}  # entry name -> (its op, "weight" or "bias")
        fps = self.q.fps["param"]
        for node in g.nodes:
            if not has_params(node):
                continue
            qw, qb = self.qg.qparams[node.name]
            fw, fb = self._float_params(node)
            for kind, name, fl, qv in (("weight", node.weight_name, fw, qw), ("bias", node.bias_name, fb, qb)):
                if not name or fl is None or qv is None or name in self.entries:
                    continue
                e = self.entries[name] = _Entry(name, kind, node, fps.get(name))
                e.add(fl, qv)
                self.param_nodes[name] = (node, kind)
        self.params_of: Dict[str, List[str]] = {}  # op -> the names of its parameters' entries
        for name, (node, _) in self.param_nodes.items():
            self.params_of.setdefault(node.name, []).append(name)
        self.samples = 0
        self.own_samples: Optional[int] = None  # decided on the first batch
        self.out_signal = self.out_noise = 0.0
        self.out_changed = self.out_positions = 0
        self.seconds = {"compare": 0.0, "own": 0.0, "float": 0.0, "timing": 0.0}
        self.own_forks = 0
        self.float_samples = 0  # samples of the float forwards timed in seconds["float"]
        self.fork_cost = 0.0  # float forwards that the forks of one sample are estimated to take

    # ---- planning -------------------------------------------------------------------------------------------
    def _fork_points(self) -> List[Tuple[int, str]]:
        """(first step the fork re-runs, entry name) for every tensor whose own error can be measured."""
        points = []
        for name, e in self.entries.items():
            if e.fp is None and e.kind in ("activation", "input"):
                continue
            if e.kind == "input":
                points.append((0, name))
            elif e.kind == "activation":
                i = self.step_of.get(name)
                if i is not None and len(self.g.steps[i].outs) == 1:
                    points.append((i + 1, name))
            else:
                points.append((self.step_of[e.node.name], name))
        return points

    def plan(self, first: torch.Tensor, total: int) -> int:
        """Times a float forward of one sample op by op (twice: the first call of each kernel is slow) and decides
        how many samples the own-error forks run on: own_budget float passes over all `total` samples, at the
        forks' estimated cost (each fork runs the ops from its tensor on)."""
        t0 = time.perf_counter()
        times = [0.0] * len(self.g.steps)
        for _ in range(2):
            env: Dict[int, Any] = dict(self.g.consts)
            env[self.g.input_id] = first[:1]
            for i, step in enumerate(self.g.steps):
                s = time.perf_counter()
                self.f.run_step(step, env, self._float_params, _keep)
                times[i] = time.perf_counter() - s
                self.f.free(i, env)
        whole = sum(times) or 1e-9
        tail = [0.0] * (len(times) + 1)
        for i in range(len(times) - 1, -1, -1):
            tail[i] = tail[i + 1] + times[i]
        self.fork_cost = sum(tail[start] / whole for start, _ in self._fork_points())
        self.seconds["timing"] += time.perf_counter() - t0
        if self.fork_cost <= 0:
            self.own_samples = total
        else:
            self.own_samples = max(1, min(total, int(self.own_budget * total / self.fork_cost)))
        return self.own_samples

    # ---- one batch ------------------------------------------------------------------------------------------
    def _float_params(self, node: Node):
        return self.fparams.get(node.name) or (node.weight, node.bias)

    def _float_forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with torch.no_grad():
            y = self.f.run(x, self._float_params, _keep)
        self.seconds["float"] += time.perf_counter() - t0
        self.float_samples += int(x.shape[0])
        return y

    def add(self, x: torch.Tensor, own: bool) -> None:
        """Compares the float and the quantized model on batch x, tensor by tensor; with own, also forks the float
        run at every tensor to measure the error it adds on its own."""
        with torch.no_grad():
            self._add(x.float(), own)

    def _add(self, x: torch.Tensor, own: bool) -> None:
        g = self.g
        ref = self._float_forward(x) if own else None
        ref_classes = classes(ref) if own else None
        t0 = time.perf_counter()
        own_s = 0.0
        seen_f: Dict[str, torch.Tensor] = {}
        seen_q: Dict[str, torch.Tensor] = {}

        def fquant(node, val, act):
            val = _keep(node, val, act)
            seen_f[node.name] = val
            return val

        def qquant(node, val, act):
            val = self.q._quant(node, val, act)
            fp = self.q.in_units.get(node.name)
            seen_q[node.name] = val if fp is None else val * 2.0 ** -fp
            return val

        fenv: Dict[int, Any] = dict(g.consts)
        qenv: Dict[int, Any] = dict(g.consts)
        xq = x.contiguous(memory_format=torch.channels_last) if self.q.channels_last and x.dim() == 4 else x
        fenv[g.input_id], qenv[g.input_id] = x, xq
        inp = self.f.input_node
        if inp.name in self.f.keys:
            fenv[g.input_id] = fquant(inp, x, None)
            qenv[g.input_id] = qquant(inp, fxp.own_copy(xq), None)
        made = self._compare(seen_f, seen_q)
        if own and made:
            own_s += self._forks(-1, None, fenv, made, ref, ref_classes)
        for i, step in enumerate(g.steps):
            self.f.run_step(step, fenv, self._float_params, fquant)
            self.q.run_step(step, qenv, self._qparams, qquant)
            made = self._compare(seen_f, seen_q)
            if own and step.node is not None and (made or step.node.name in self.params_of):
                own_s += self._forks(i, step, fenv, made, ref, ref_classes)
            self.f.free(i, fenv)
            self.q.free(i, qenv)
        y_f, y_q = fenv[g.output_id], qenv[g.output_id]
        if isinstance(y_f, torch.Tensor) and isinstance(y_q, torch.Tensor):
            self.out_noise += _sum_sq(y_q.float() - y_f.float())
            self.out_signal += _sum_sq(y_f.float())
            f_classes = classes(y_f)
            if f_classes is not None:
                self.out_changed += changed(y_q, f_classes)
                self.out_positions += f_classes.numel()
        self.samples += int(x.shape[0])
        self.seconds["own"] += own_s
        self.seconds["compare"] += time.perf_counter() - t0 - own_s

    def _qparams(self, node: Node):
        return self.q.qparams[node.name]

    def _compare(self, seen_f: Dict[str, torch.Tensor], seen_q: Dict[str, torch.Tensor]) -> List[str]:
        """Adds the tensors both runs just made to their entries; returns their names."""
        made = []
        for name, f in seen_f.items():
            q = seen_q.get(name)
            if q is None or not isinstance(f, torch.Tensor):
                continue
            e = self.entries.get(name)
            if e is None:
                base, _, index = name.rpartition(":")
                node = self.nodes.get(base)
                if node is None or not index.isdigit():
                    continue
                e = self.entries[name] = _Entry(name, "activation", node, self.q.out_fp.get(name), int(index))
            if e.fp is not None:
                e.add(f, q)
                made.append(name)
        seen_f.clear()
        seen_q.clear()
        return made

    def _forks(self, i: int, step, fenv: Dict[int, Any], made: List[str], ref: torch.Tensor,
               ref_classes: Optional[torch.Tensor]) -> float:
        """Forks the float run after step i (i = -1: at the input) once per tensor made there, and once per
        parameter of step i's op; returns the seconds taken."""
        t0 = time.perf_counter()
        g = self.g
        for name in made:
            e = self.entries[name]
            if e.index is not None:
                continue  # a tensor of a list-valued output: its own error is not measured
            vid = g.input_id if i < 0 else step.outs[0] if len(step.outs) == 1 else None
            val = fenv.get(vid) if vid is not None else None
            if not isinstance(val, torch.Tensor):
                continue
            env = dict(fenv)
            env[vid] = self.qg._quant(e.node, fxp.own_copy(val), None)
            e.add_own(self._tail(env, i + 1, self._float_params), ref, ref_classes)
            self.own_forks += 1
        if step is not None:
            for name in self.params_of.get(step.node.name, ()):
                node, kind = self.param_nodes[name]
                qw, qb = self.qg.qparams[node.name]
                fw, fb = self._float_params(node)
                w, b = (qw, fb) if kind == "weight" else (fw, qb)

                def params(n, node=node, w=w, b=b):
                    return (w, b) if n is node else self._float_params(n)

                self.entries[name].add_own(self._tail(dict(fenv), i, params), ref, ref_classes)
                self.own_forks += 1
        return time.perf_counter() - t0

    def _tail(self, env: Dict[int, Any], start: int, params) -> torch.Tensor:
        steps = self.g.steps
        for k in range(start, len(steps)):
            self.f.run_step(steps[k], env, params, _keep)
            self.f.free(k, env)
        return env[self.g.output_id]

    # ---- the document ---------------------------------------------------------------------------------------
    def result(self, model_class: str, backend: str, float_per_sample: Optional[float] = None,
               setup_seconds: float = 0.0) -> Dict[str, Any]:
        """The layers.json document. float_per_sample: the seconds of the run's own float predictions per sample
        (the cost's unit); without it, the graph's float forwards timed here. setup_seconds: time spent before
        (the reference capture), counted in the cost."""
        g = self.g
        depth_of = {n.name: d for d, n in enumerate(g.nodes)}
        entries = sorted(self.entries.values(), key=lambda e: (depth_of[e.node.name], e.kind != "weight",
                                                              e.kind != "bias", e.index or 0))
        used = sorted({depth_of[e.node.name] for e in entries})
        dense = {d: k for k, d in enumerate(used)}
        tensors = []
        for e in entries:
            node = e.node
            members = g.groups.get(node.name, [node]) if e.kind in ("activation", "input") else [node]
            module = self.modules.get(node.name, "")
            if not module:
                module = next((self.modules.get(m.name, "") or m.module_path for m in members
                               if self.modules.get(m.name) or m.module_path), "")
            if e.kind in ("weight", "bias"):
                module = node.module_path or module
            tensors.append({
                "name": e.name if e.kind in ("weight", "bias") else g.full(node.name),
                "kind": e.kind,
                "index": e.index,
                "module": module,
                "source": node.source,
                "op": node.op if e.kind in ("activation", "input") else "{} {}".format(node.op, e.kind),
                "group": "+".join(m.op for m in members),
                "bit_width": fxp.BIT_WIDTH,
                "fix_pos": e.fp,
                "depth": dense[depth_of[node.name]],
                "sqnr_db": _round(sqnr_db(e.signal, e.noise)),
                "clipped": None if e.fp is None or not e.count else e.clipped / e.count,
                "signal_ms": e.signal / e.count if e.count else None,
                "noise_ms": e.noise / e.count if e.count else None,
                "own_sqnr_db": _round(sqnr_db(e.own_signal, e.own_noise)) if e.own_measured else None,
                "own_noise_ms": e.own_noise / e.own_count if e.own_measured and e.own_count else None,
                "own_changed": e.own_changed / e.own_positions if e.own_measured and e.own_positions else None,
            })
        ranked = sorted((t for t in tensors if t["own_noise_ms"] is not None),
                        key=lambda t: (-t["own_noise_ms"], t["depth"]))
        total = sum(self.seconds.values()) + setup_seconds
        # the unit: a float forward of all the analysed samples
        unit = "the run's float predictions" if float_per_sample else "the float forwards of the own-error samples"
        if not float_per_sample and self.float_samples:
            float_per_sample = self.seconds["float"] / self.float_samples
        float_pass = float_per_sample * self.samples if float_per_sample else None
        return {
            "schema": SCHEMA,
            "model": model_class,
            "backend": backend,
            "bit_width": fxp.BIT_WIDTH,
            "samples": self.samples,
            "measures": MEASURES,
            "params_note": PARAMS_NOTE,
            "output": {"sqnr_db": _round(sqnr_db(self.out_signal, self.out_noise)),
                       "changed": self.out_changed / self.out_positions if self.out_positions else None,
                       "what": "the whole quantized model against the float model on the analysed samples"},
            "own_error": {"measure": "own_sqnr_db (ranked by own_noise_ms)", "samples": self.own_samples or 0,
                          "tensors": sum(1 for e in self.entries.values() if e.own_measured),
                          "forks": self.own_forks, "budget_float_passes": self.own_budget,
                          "what": "forks: float runs forked at a tensor, one per tensor and batch of these samples"},
            "cost": {"seconds": round(total, 3),
                     "compare_seconds": round(self.seconds["compare"], 3),
                     "own_error_seconds": round(self.seconds["own"] + self.seconds["float"], 3),
                     "planning_seconds": round(self.seconds["timing"], 3),
                     "capture_seconds": round(setup_seconds, 3),
                     "float_pass_seconds": _round(float_pass),
                     "float_passes": _round(total / float_pass, 2) if float_pass else None,
                     "what": "float_passes: the analysis's whole time over that of one float forward of all the "
                             "analysed samples (float_pass_seconds, timed on {})".format(unit)},
            "worst": [t["name"] + ("" if t["index"] is None else ":{}".format(t["index"])) for t in ranked[:WORST]],
            "tensors": tensors,
        }


def _round(v: Optional[float], digits: int = 3) -> Optional[float]:
    return None if v is None else round(v, digits)


def analyze(g: Graph, test: TestModel, batches: Iterable[torch.Tensor], total: int,
            modules: Optional[Dict[str, str]] = None, own_budget: float = OWN_BUDGET,
            advance: Callable[[int], None] = lambda n: None,
            float_params: Optional[Dict[str, Tuple[torch.Tensor, Any]]] = None) -> LayerAnalysis:
    """Runs the analysis over `total` samples in batches; the first own_samples of them (decided on the first
    batch, LayerAnalysis.plan) also measure every tensor's own error."""
    a = LayerAnalysis(g, test, modules, own_budget, float_params)
    seen = 0
    for x in batches:
        x = x.float()
        if a.own_samples is None:
            a.plan(x, total)
        own_left = max(0, (a.own_samples or 0) - seen)
        for part, own in ((x[:own_left], True), (x[own_left:], False)):
            if part.shape[0]:
                a.add(part, own)
        seen += int(x.shape[0])
        advance(int(x.shape[0]))
    return a


def write(doc: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def analyze_run(job, backend, backend_name: str, model_class: str,
                float_per_sample: Optional[float] = None) -> str:
    """The payload's analysis step for a portable (or hybrid's portable) backend after its test predictions:
    layers.json in the run directory over the first job.analyze_samples test samples (all when None); returns
    the file's name. float_per_sample: the run's float predictions' seconds per sample, the cost's unit."""
    from container_payload.data import SampleReader
    from container_payload.events import Phase, log
    from container_payload.job import LAYERS

    limit = job.analyze_samples
    if job.test_limit is not None:
        limit = job.test_limit if limit is None else min(limit, job.test_limit)
    reader = SampleReader(job.samples, "test", limit)
    g, test = backend._graph, backend._test
    if g is None or test is None:
        raise RuntimeError("layer analysis needs a calibrated portable backend")
    head = reader.batches(1)
    try:
        first = next(head)[1]
    finally:
        head.close()
    start = time.perf_counter()
    modules, float_params = reference(backend.model, torch.from_numpy(first), g, backend.quant_opt > 0)
    setup = time.perf_counter() - start
    with Phase("analyze", len(reader)) as progress:
        batches = (torch.from_numpy(array) for _, array in reader.batches(job.eval_batch_size))
        a = analyze(g, test, batches, len(reader), modules, advance=progress.advance, float_params=float_params)
    doc = a.result(model_class, backend_name, float_per_sample, setup)
    write(doc, os.path.join(job.run_dir, LAYERS))
    cost = doc["cost"]
    log("layer analysis: {} tensors on {} test samples, the own error of {} on the first {}; {:.2f} s, {} float "
        "passes".format(len(doc["tensors"]), doc["samples"], doc["own_error"]["tensors"], doc["own_error"]["samples"],
                        cost["seconds"], cost["float_passes"]))
    return LAYERS
