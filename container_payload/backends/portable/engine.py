"""Running the captured graph: calibration (fix positions per batch, bias correction) and the test-mode model.

Calibration follows pytorch_nndct's calib mode (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch):
- pytorch_nndct/quantization/torchquantizer.py `do_scan`: every quantized output runs diffs on each batch, the
  result (capped at 12) joins that tensor's history, and the batch is quantized with the history's mode; that
  quantized tensor is what the next op sees. Parameters get their fix position once, on first use.
- pytorch_nndct/nn/modules/conv.py (and linear, conv_transpose) with quant_opt > 0 ("param_corr"): parameters are
  quantized in place on first use only (later calls of `calibrate_int` find their fix position set and leave
  them alone, so a corrected bias stays off the grid for the rest of calibration); after each batch the float op
  is re-run on the same input with the original parameters,
  and while pytorch_nndct/nn/modules/quant_noise.py `eval_qnoise` has not stopped, the bias moves by
  rate * mean error per channel (rate 0.05, halved for that batch when the running efficiency passes 4).
  The test-mode bias is float_bias - (float_bias - corrected_bias), as bias_corr.pth stores and reloads it.
- avg pools scale their output to the DPU's approximation of 1/(kh*kw) (pytorch_nndct/nn/modules/avgpool.py).
- torchquantizer.py `organize_quant_pos` (QuantizeFixPosChecker), run when quant_info.json is written, in one
  pass over the nodes: nearest resizes (unless they end in a concat) and zero paddings take their input's fix
  position; hsigmoid/hswish inputs are raised to >= 0, hsigmoid outputs to >= 7, hswish outputs lowered to at
  most input + 7; for each conv-like node shift_cut = w + i - o must lie in [0, 16] (o lowered, or w lowered)
  and shift_bias = w + i - b in [min(0, shift_cut - 16), 16] (b lowered, or w lowered).
"""

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from container_payload.graph.nndct import CONV3D_OPS, CONV_OPS, LEAKY_SLOPE, NORM_SLOTS, PARAM_OPS, Graph, Node, Step

from . import fixpoint as fxp
from .groups import QUANTIZABLE

CORR_RATE = 0.05  # nndct_param_corr_rate's default
# ops whose result is a new tensor, which can then be quantized in place
_FRESH = frozenset(PARAM_OPS + ("batch_norm", "relu", "relu6", "leaky_relu", "maxpool", "avgpool",
                                "adaptive_avg_pool2d", "concat", "elemwise_add", "resize", "hswish", "hsigmoid",
                                "sigmoid", "tanh", "softmax", "elemwise_mul", "elemwise_div", "elementwise_sub",
                                "mean", "sum", "stack", "prelu", "pad"))
HSIGMOID_SCALE = 2731.0 / 16384.0
# ops that may write their result into their first input (Runner.may_overwrite)
_IN_PLACE = frozenset(("relu", "relu6", "leaky_relu", "elemwise_add"))
# activations the quantizer can apply in its own first pass over memory: the same in-place kernels as in
# _node_value, so the values are the same bit for bit
_FUSED_ACT = {
    "relu": torch.relu_,
    "relu6": fxp.relu6_,
    "leaky_relu": lambda t: F.leaky_relu(t, LEAKY_SLOPE, inplace=True),
}


# ops whose every result is >= 0 (nan aside): their outputs are rounded without the exact-half pass
_NONNEG_OPS = frozenset(("relu", "relu6", "hsigmoid", "sigmoid", "softmax"))


def _nonneg(node, act: fxp.Activation) -> bool:
    return node.op in _NONNEG_OPS or act in fxp.NONNEG


class _BiasCorr:
    """The running state of eval_qnoise for one op."""

    def __init__(self) -> None:
        self.stop = False
        self.efficiency = 0.0
        self.deviation = 0.0

    def update(self, noise: float, signal: float, rate: float) -> float:
        """One eval_qnoise step from the mean squared error and mean squared reference; returns this batch's
        rate (and sets stop)."""
        if noise > 0:
            eff = 1.25 * math.log10(signal / noise) if signal > 0 else -math.inf
            dev = math.fabs(eff - self.efficiency)
            if dev > 0:
                self.efficiency = (self.efficiency * 4 + eff) * 0.2
                self.deviation = (self.deviation * 4 + dev) * 0.2
                if self.efficiency > 4.0:
                    rate = rate * 0.5
                if (self.efficiency > 4.3 or (self.deviation / self.efficiency) < 0.05 or
                        math.fabs(dev - self.deviation / dev) < 0.05):
                    self.stop = True
            else:
                self.stop = True
        else:
            self.stop = True
        return rate


def error_stats(output: torch.Tensor, ref: torch.Tensor, channel_dim: int):
    """Per-channel mean of output - ref, mean of its square and mean of ref squared (eval_qnoise's inputs),
    one sample at a time: float32 sums per sample, accumulated in float64 in sample order. ref may be
    overwritten."""
    n_ch = output.shape[channel_dim]
    sums = torch.zeros(n_ch, dtype=torch.float64)
    noise = signal = 0.0
    for o, r in zip(output, ref):  # ref is the caller's to overwrite
        e = torch.sub(o, r).reshape(-1)
        sums += e.view(n_ch, -1).sum(1) if channel_dim == 1 else e.view(-1, n_ch).sum(0)
        noise += fxp.sum_of_squares(e)
        signal += fxp.sum_of_squares(r.reshape(-1))
    count = output.numel()
    return (sums * (n_ch / count)).float(), noise / count, signal / count


def hswish_gate(x: torch.Tensor) -> torch.Tensor:
    """hardswish's gate as pytorch_nndct/nn/modules/hardswish.py computes it: the DPU's hsigmoid, quantized at
    fix position 7 (round half up), into a new tensor."""
    return fxp.quantize_act_(F.relu6(torch.add(x, fxp.const(3.0)), inplace=True).mul_(fxp.const(HSIGMOID_SCALE)), 7)


# On a quantized input the gate's integer is floor(x * 2731/128 + 8257/128) clamped to [0, 127]: relu6(x + 3) *
# 2731/16384 * 2^7 + 0.5 for x + 3 in [0, 6], and below 0 or above 127 beyond. Checked on every input value
# (fast_hswish_gate_holds) before it is used.
_GATE_SLOPE = 2731.0 / 128.0
_GATE_OFFSET = 8257.0 / 128.0


def fast_hswish_gate(x: torch.Tensor, times_128: bool = False) -> torch.Tensor:
    """hswish_gate(x) in three passes instead of eight, for an x on which fast_hswish_gate_holds; with
    times_128, the gate's integer (128 times the gate), in two."""
    gate = torch.add(fxp.const(_GATE_OFFSET), x, alpha=_GATE_SLOPE).floor_().clamp_(0.0, 127.0)
    return gate if times_128 else gate.mul_(fxp.const(1.0 / 128.0))


def fast_hswish_gate_holds(fp: int) -> bool:
    """Whether fast_hswish_gate gives hswish_gate's bits on all 256 values of a tensor quantized at fp."""
    x = torch.arange(fxp.QMIN, fxp.QMAX + 1, dtype=torch.float32) * 2.0 ** -fp
    return torch.equal(fast_hswish_gate(x), hswish_gate(x))


def dpu_mean_scale(rec: int) -> float:
    """rec * the DPU's approximation of 1/rec (nndct_shared/utils/dpu_utils.py calculate_op_scale)."""
    max_factor = math.ceil(math.log(rec * 128, 2))
    diff, multi, shift = 1.0, 0.0, 0.0
    for s in range(max_factor):
        factor = round((2 ** s) / rec)  # Python's round, as the original
        d = abs(factor / (2 ** s) - 1 / rec)
        if d < diff:
            multi, diff, shift = factor, d, s
    return rec * multi / (2 ** shift)


def avgpool_scale(kernel: List[int]) -> float:
    """The factor by which the DPU's average pool differs from a true mean (pytorch_nndct avgpool.py)."""
    if kernel == [3, 3]:
        return 9.0 * 7.0 / 64.0
    if kernel == [5, 5]:
        return 25.0 * 10.0 / 256.0
    if kernel in ([6, 6], [3, 6], [6, 3]):
        return 36.0 * 7.0 / 256.0
    if kernel == [7, 7]:
        return 49.0 * 21.0 / 1024.0
    if kernel == [14, 14]:
        return 196.0 * 21.0 / 4096.0
    return dpu_mean_scale(kernel[0] * kernel[1])


def has_params(node: Node) -> bool:
    """Whether the node has parameters of its own in quant_info.json (convs, dense, BN, PReLU)."""
    return node.weight is not None and bool(node.weight_name)


class Runner:
    """Executes a captured Graph; quantizes where nndct would. One instance per mode."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.keys = set(g.output_keys)
        self.input_node = next(n for n in g.nodes if n.op == "input")
        # values are dropped after their last use, as eager PyTorch drops them: peak memory stays that of the
        # float forward instead of holding every activation of the batch
        last: Dict[int, int] = {}
        for i, step in enumerate(g.steps):
            for v in step.ins:
                last[v] = i
            for v in step.outs:
                last.setdefault(v, i)
        self.free_after: Dict[int, List[int]] = {}
        for v, i in last.items():
            if v != g.output_id and v not in g.consts:
                self.free_after.setdefault(i, []).append(v)
        # an activation or add may write into its first input when that value is read by this step alone and
        # was made by an earlier node of this run (checked again at run time: `owned`); eager models do the
        # same with ReLU(inplace=True), and it spares a pass over memory and an allocation per op
        uses: Dict[int, int] = {}
        for step in g.steps:
            for v in step.ins:
                uses[v] = uses.get(v, 0) + 1
        self.may_overwrite = frozenset(
            i for i, step in enumerate(g.steps)
            if step.node is not None and step.node.op in _IN_PLACE and step.ins and uses.get(step.ins[0]) == 1
            and step.ins[0] not in g.consts and step.ins[0] not in (g.input_id, g.output_id))

    # ---- the float op of each node, on already-quantized params -------------------------------------------------
    def _param_op(self, node: Node, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        a = node.attrs
        if node.op in ("conv2d", "depthwise_conv2d"):
            return F.conv2d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
        if node.op == "conv1d":
            return F.conv1d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
        if node.op == "conv3d":
            return F.conv3d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
        if node.op in ("conv_transpose_2d", "depthwise_conv_transpose_2d"):
            return F.conv_transpose2d(x, w, b, a["stride"], a["padding"], a["output_padding"], a["groups"],
                                      a["dilation"])
        if node.op == "dense":
            return F.linear(x, w, b)
        if node.op == "batch_norm":
            shape = [1, -1] + [1] * (x.dim() - 2)
            return x * w.view(shape) + b.view(shape)
        if node.op == "prelu":
            return F.prelu(x, w)
        raise AssertionError(node.op)

    def _node_value(self, node: Node, step: Step, env, params, overwrite: bool = False) -> torch.Tensor:
        """The op's float result given quantized inputs (and, for param ops, the quantized params). With
        overwrite, the first input is this op's to reuse (an owned value read by no one else)."""
        op = node.op
        if op in NORM_SLOTS and has_params(node):
            args = [env[i] for i in step.ins]
            wi, bi = NORM_SLOTS[op]
            args[wi], b = params(node)
            if b is not None:
                args[bi] = b
            return step.fn(*args)
        if has_params(node):
            x = env[step.ins[0]]
            w, b = params(node)
            return self._param_op(node, x, w, b)
        args = [env[i] for i in step.ins]
        if op == "leaky_relu":
            return F.leaky_relu(args[0], LEAKY_SLOPE, inplace=overwrite)
        if op == "relu":  # relu6 too, where nndct turns it into relu (quant_opt > 0)
            return torch.relu_(args[0]) if overwrite else torch.relu(args[0])
        if op == "relu6":
            return F.relu6(args[0], inplace=overwrite)
        if op == "hsigmoid":
            # pytorch_nndct/nn/modules/hardsigmoid.py: relu6(x + 3) * 2731 / 2^14, the DPU's 1/6
            return F.relu6(torch.add(args[0], fxp.const(3.0)), inplace=True).mul_(fxp.const(HSIGMOID_SCALE))
        if op == "hswish":
            # pytorch_nndct/nn/modules/hardswish.py: the gate is hsigmoid's, quantized at fix position 7
            # (round half up), before it multiplies the input
            x = args[0]
            gate = self._hswish_gate(node, x)
            return gate.mul_(x) if gate.shape == x.shape else x * gate
        if op == "elemwise_add" and overwrite and len(args) == 3 and _writable_sum(args[0], args[1]):
            return args[0].add_(args[1], alpha=args[2])
        out = step.fn(*args)
        if op in ("avgpool", "adaptive_avg_pool2d", "mean") and (out._base is not None or any(
                out is a for a in args)):
            out = out.clone()  # scaled in place below
        if op == "avgpool":
            out = out.mul_(avgpool_scale(node.attrs["kernel"]))
        elif op == "adaptive_avg_pool2d":
            kernel = self._adaptive_kernel(args[0], out)
            if kernel is None:
                node.attrs["skip_quant"] = True  # nndct leaves a non-divisible adaptive pool unquantized
            else:
                out = out.mul_(avgpool_scale(kernel))
        elif op == "mean":
            # pytorch_nndct/nn/modules/mean.py: a mean over a count that is not a power of two is the DPU's
            dims = node.attrs.get("dims")
            x = args[0]
            dims = list(range(x.dim())) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
            rec = 1
            for d in dims:
                rec *= int(x.shape[d])
            if rec & (rec - 1):
                out = out.mul_(dpu_mean_scale(rec))
        return out

    def _hswish_gate(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return hswish_gate(x)

    @staticmethod
    def _adaptive_kernel(x: torch.Tensor, out: torch.Tensor) -> Optional[List[int]]:
        ins = [int(d) for d in x.shape[2:]]
        outs = [int(d) for d in out.shape[2:]]
        if any(o == 0 or i % o for i, o in zip(ins, outs)):
            return None
        return [i // o for i, o in zip(ins, outs)]

    def run(self, x: torch.Tensor, params, quant: Callable[[Node, torch.Tensor, fxp.Activation], torch.Tensor],
            after: Optional[Callable] = None, stop_before: Optional[int] = None):
        """One forward pass. params(node) gives a param op's (weight, bias); quant(node, value, act) quantizes
        a node's output in place, applying act (an in-place activation, or None) to it first: a ReLU whose input
        is its alone is left to the quantizer's first pass over memory. With stop_before, the values live before
        that step instead (run_steps goes on from there)."""
        g = self.g
        env: Dict[int, object] = dict(g.consts)
        owned = set()  # values made by this run's nodes that no other value aliases
        env[g.input_id] = x
        inp = self.input_node
        if inp.name in self.keys:
            env[g.input_id] = quant(inp, fxp.own_copy(x), None)
        return self.run_steps(env, owned, params, quant, after, 0, stop_before)

    def run_steps(self, env: Dict[int, object], owned: set, params, quant, after: Optional[Callable], begin: int,
                  stop_before: Optional[int] = None):
        """Steps begin.. of a forward pass on env (value id -> value; consts included); owned, the values no
        other value aliases, which a step may overwrite."""
        g = self.g
        free = self.free_after
        steps = g.steps
        for i in range(begin, len(steps)):
            if i == stop_before:
                return env
            step = steps[i]
            overwrite = step.node is not None and i in self.may_overwrite and step.ins[0] in owned
            if self.run_step(step, env, params, quant, after, overwrite):
                owned.add(step.outs[0])
            for dead in free.get(i, ()):
                env.pop(dead, None)
        return env[g.output_id]

    def run_step(self, step: Step, env: Dict[int, object], params, quant, after: Optional[Callable] = None,
                 overwrite: bool = False) -> bool:
        """One step into env: a plain function of its inputs (list packing, sizes) or a node; returns whether its
        value is a tensor no other value aliases."""
        if step.node is None:
            val = step.fn(*[env[v] for v in step.ins])
            if len(step.outs) == 1:
                env[step.outs[0]] = val
            else:
                for o, v in zip(step.outs, val):
                    env[o] = v
            return False
        return self._step(step.node, step, env, params, quant, after, overwrite)

    def free(self, i: int, env: Dict[int, object]) -> None:
        """Drops from env the values no step after step i reads."""
        for dead in self.free_after.get(i, ()):
            env.pop(dead, None)

    def _step(self, node: Node, step: Step, env: Dict[int, object], params, quant, after, overwrite: bool) -> bool:
        """Runs one node; returns whether its value is a tensor no other value aliases."""
        quantized = node.name in self.keys and not node.attrs.get("skip_quant")
        act = _FUSED_ACT.get(node.op) if quantized and overwrite else None
        if act is not None and env[step.ins[0]].dtype == torch.float32 and fxp.is_dense(env[step.ins[0]]):
            # the activation runs inside the quantizer's first pass over its (owned, dying) input
            val, owned = env[step.ins[0]], True
        else:
            act = None
            val = self._node_value(node, step, env, params, overwrite)
            owned = isinstance(val, torch.Tensor) and (overwrite or (
                node.op in _FRESH and val._base is None and all(val is not env[a] for a in step.ins)))
        if quantized and node.attrs.get("list_out"):
            # each tensor of the list is quantized on its own, as output `index` of the node (part_key)
            val = [quant(_Part(part_key(node.name, k), node.op), fxp.own_copy(v), None) for k, v in enumerate(val)]
        elif quantized and node.attrs.get("out_floats"):
            # several outputs: the float ones each as output `index` (part_key), the integer ones as they are
            val = tuple(quant(_Part(part_key(node.name, k), node.op), fxp.own_copy(v), None) if is_float else v
                        for k, (v, is_float) in enumerate(zip(val, node.attrs["out_floats"])))
        elif quantized and node.attrs.get("first_out"):
            val = (quant(node, fxp.own_copy(val[0]), None),) + tuple(val[1:])
        elif quantized:
            if not (owned and val.dtype == torch.float32 and fxp.is_dense(val)):
                val = fxp.own_copy(val)
                owned = True
            val = quant(node, val, act)  # in place: val is a tensor no one else holds
        if after is not None:
            after(node, step, env, val)
        if len(step.outs) == 1:
            env[step.outs[0]] = val
            return owned
        for o, v in zip(step.outs, val):
            env[o] = v
        return False


class _Part:
    """One tensor of a list-valued node's output, as the quantizers see it: its key and the node's op."""

    def __init__(self, name: str, op: str) -> None:
        self.name = name
        self.op = op


def part_key(name: str, index: int) -> str:
    """The fix-position key of output `index` of a list-valued node (quant_info.json lists them in order)."""
    return "{}:{}".format(name, index)


def _writable_sum(a, b) -> bool:
    """Whether a += b gives a + b: float32 tensors, a dense, b broadcasting into a's shape."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype == torch.float32
            and fxp.is_dense(a) and b.dim() <= a.dim()
            and all(db in (1, da) for da, db in zip(reversed(a.shape), reversed(b.shape))))


class Calibrator(Runner):
    """nndct's calib mode. With fixed (fix positions as fix_positions() gives them), every tensor is quantized at
    its given position and none is searched: nndct's calibration after fast finetune (keep_fp), where only bias
    correction moves."""

    def __init__(self, g: Graph, bias_correction: bool,
                 fixed: Optional[Dict[str, Dict[str, Optional[int]]]] = None) -> None:
        super().__init__(g)
        self.fixed = fixed
        self.param_fp: Dict[str, int] = {}
        self.history: Dict[str, List[int]] = {k: [] for k in g.output_keys}
        self.bias_correction = bias_correction
        self.float_params = {}  # node name -> (w, b) before quantization (weight_bak / bias_bak)
        self.qweight: Dict[str, torch.Tensor] = {}
        self.bias_now: Dict[str, torch.Tensor] = {}  # nndct's bias.data: quantized once, then corrected
        self.corr: Dict[str, _BiasCorr] = {}
        self._ref: Optional[torch.Tensor] = None  # the float reference of the op being corrected
        self.remaining: Optional[int] = None  # batches still to come after the current one, when known
        self.invalid = set()  # outputs met with an inf or a nan (not quantized, as nndct skips them)
        # hardswish nodes reading a quantized output as it is: their gate takes the three-pass formula when that
        # output's fix position in this batch (fp_now) is one where the formula gives nndct's bits
        self.sources = quantized_sources(g)
        self.fp_now: Dict[str, Optional[int]] = {}
        self._gate_holds: Dict[int, bool] = {}
        for node in g.nodes:
            if has_params(node):
                # a parameter is quantized by the first node that uses it only: calibrate_int leaves a param
                # whose name has a fix position already untouched, so a Linear called twice (nndct renames the
                # params of a conv called twice, not of a Linear: DecoupleSharedParamsInConv) calibrates its later
                # calls with the float weight and bias (the bias still corrected from there)
                self.float_params[node.name] = (node.weight, node.bias)
                w_first = node.weight_name not in self.param_fp
                if w_first:
                    self.param_fp[node.weight_name] = (fixed["param"][node.weight_name] if fixed else
                                                       fxp.capped(fxp.diffs_fix_pos(node.weight)))
                self.qweight[node.name] = (fxp.quantize_param(node.weight, self.param_fp[node.weight_name])
                                           if w_first else node.weight)
                if node.bias is not None:
                    b_first = node.bias_name not in self.param_fp
                    if b_first:
                        self.param_fp[node.bias_name] = (fixed["param"][node.bias_name] if fixed else
                                                         fxp.capped(fxp.diffs_fix_pos(node.bias)))
                    self.bias_now[node.name] = (fxp.quantize_param(node.bias, self.param_fp[node.bias_name])
                                                if b_first else node.bias)
                    if bias_correction and node.op in PARAM_OPS:
                        self.corr[node.name] = _BiasCorr()

    def params(self, node: Node):
        # nndct quantizes a parameter in place on its first use only (calibrate_int computes and applies a
        # param's fix position while it has none, and returns it untouched afterwards): corrections made after
        # a batch stay off the grid and are what the next batches compute with
        return self.qweight[node.name], self.bias_now.get(node.name)

    def _hswish_gate(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        fp = self.fp_now.get(self.sources.get(node.name, ""))
        if fp is not None:
            holds = self._gate_holds.get(fp)
            if holds is None:
                holds = self._gate_holds[fp] = fast_hswish_gate_holds(fp)
            if holds:
                return fast_hswish_gate(x)
        return hswish_gate(x)

    def quant(self, node: Node, val: torch.Tensor, act: fxp.Activation) -> torch.Tensor:
        self.fp_now[node.name] = None  # until _quant quantizes it
        return self._quant(node, val, act)

    def _quant(self, node: Node, val: torch.Tensor, act: fxp.Activation) -> torch.Tensor:
        if self.fixed is not None:
            fp = self.fp_now[node.name] = self.fixed["output"].get(node.name)
            if fp is None:  # never quantized (an inf or a nan when it was calibrated)
                return act(val) if act is not None else val
            return fxp.quantize_act_(val, fp, act, nonneg=_nonneg(node, act))
        scope = 1 if node.op == "input" else fxp.DIFFS_SCOPE
        hist = self.history.setdefault(node.name, [])  # a list-valued node's parts come in as they are met
        if self.remaining is not None:
            locked = fxp.settled_mode(hist, self.remaining + 1)
            if locked is not None:
                # no batch left, this one included, can move the mode: the fix position this batch's diffs would
                # add to the history cannot count, and every batch from here on is quantized at the mode
                self.fp_now[node.name] = locked
                return fxp.quantize_act_(val, locked, act)
        # once the history's mode cannot move, this batch's fix position is known before its diffs are, and
        # the tensor is quantized inside the diffs pass instead of in a pass of its own
        settled = fxp.settled_mode(hist)
        fp = fxp.diffs_fix_pos(val, scope, act=act, then_fp=settled)
        if fp is None:
            # an inf or a nan: nndct leaves the tensor as it is and adds nothing to the history; a tensor never
            # quantized so has a null fix position in quant_info.json (timm's EdgeNeXt: its positional encoding
            # divides by a const quantized to 0)
            self.invalid.add(node.name)
            return val
        hist.append(fxp.capped(fp))
        if settled is None:
            settled = fxp.modal_fp(hist)
            fxp.quantize_act_(val, settled, nonneg=_nonneg(node, act))
        self.fp_now[node.name] = settled
        return val

    def _node_value(self, node: Node, step: Step, env, params, overwrite: bool = False) -> torch.Tensor:
        state = self.corr.get(node.name)
        if state is None or state.stop:
            return super()._node_value(node, step, env, params, overwrite)
        # bias correction needs the float op on the same input; kept for _correct. (Two calls, not one on
        # stacked output channels: the halves of a stacked result are strided and cost two copies, more than
        # the second call; measured on the benchmark's convs.)
        x = env[step.ins[0]]
        w, b = params(node)
        wf, bf = self.float_params[node.name]
        self._ref = self._param_op(node, x, wf, bf)
        return self._param_op(node, x, w, b)

    def _correct(self, node: Node, step: Step, env, val: torch.Tensor) -> None:
        state = self.corr.get(node.name)
        if state is None or state.stop:
            return
        ref, self._ref = self._ref, None
        mean_err, noise, signal = error_stats(val, ref, 1 if node.op != "dense" else val.dim() - 1)
        if node.op == "conv1d":
            # pytorch_nndct/nn/modules/conv1d.py averages the error over dims [0, 1, 2], channels included: one
            # correction for every channel (the per-channel means have equal counts, so theirs is the mean)
            mean_err = torch.full_like(mean_err, float(mean_err.double().mean()))
        rate = state.update(noise, signal, CORR_RATE)
        if not state.stop:
            # the correction accumulates off the grid; test mode quantizes the final value
            self.bias_now[node.name] = self.bias_now[node.name] - rate * mean_err

    def step(self, x: torch.Tensor, remaining: Optional[int] = None) -> None:
        """Calibrate on one batch; remaining, when known, is how many batches will follow it (it lets the
        search for fix positions stop once no batch left can change them)."""
        self.remaining = remaining
        with torch.no_grad():
            self.run(x, self.params, self.quant, self._correct if self.corr else None)

    def fix_positions(self) -> Dict[str, Dict[str, int]]:
        """Fix positions as calibration leaves them (before the export-time adjustments)."""
        if self.fixed is not None:
            return {"param": dict(self.fixed["param"]), "output": dict(self.fixed["output"])}
        out = {k: fxp.modal_fp(h) for k, h in self.history.items() if h}
        out.update((k, None) for k in self.invalid if k not in out)  # reached, never quantizable: null
        return {"param": dict(self.param_fp), "output": out}

    def test_biases(self) -> Dict[str, torch.Tensor]:
        """The biases test mode uses: float - (float - corrected), as bias_corr.pth round-trips them."""
        res = {}
        for node in self.g.nodes:
            if node.name not in self.bias_now:
                continue
            b_bak = self.float_params[node.name][1]
            if node.name in self.corr:
                res[node.name] = b_bak - (b_bak - self.bias_now[node.name])
            else:
                res[node.name] = b_bak
        return res


def adjust(g: Graph, fps: Dict[str, Dict[str, int]]) -> List[str]:
    """nndct's export-time fix position adjustments, in place; returns what was changed, for the log.

    torchquantizer.py `organize_quant_pos` -> QuantizeFixPosChecker (nndct_shared/quantization/fix_pos_adjust.py):
    one pass over the quantizable nodes, head to tail, each applying its op's rules in turn (the input-alignment
    options that would run first, tail to head, are off by default)."""
    out, par = fps["output"], fps["param"]
    notes: List[str] = []

    def key(node: Node) -> str:
        return node.name if node.name in out else g.quant_out[node.name].name

    def fp_out(node: Node) -> Optional[int]:
        return out.get(key(node))

    def set_out(node: Node, value: int, why: str) -> None:
        k = key(node)
        if k in out and out[k] != value:
            notes.append("{}: output fix position {} -> {} ({})".format(k, out[k], value, why))
            out[k] = value

    for node in g.nodes:
        if node.op not in QUANTIZABLE:
            continue
        if node.op == "resize" and node.parents and _resize_mode(node) == "nearest" or node.op == "pad":
            # a nearest resize (unless it ends in a concat) and a zero padding keep their input's position
            if node.op == "pad" or g.quant_out[node.name].op != "concat":
                src = fp_out(node.parents[0])
                if src is not None:
                    set_out(node, src, "as its input")
        elif node.op in ("hsigmoid", "hswish"):
            # the DPU's hard sigmoid needs input fix positions >= 0, an hsigmoid output >= 7, and an hswish
            # output at most its input's + 7
            for p in node.parents:
                i = fp_out(p)
                if i is not None and i < 0:
                    set_out(p, 0, "input of " + node.name)
            o = fp_out(node)
            if o is not None and node.op == "hsigmoid" and o < 7:
                set_out(node, 7, "hsigmoid output")
            i = fp_out(node.parents[0]) if node.parents else None
            if o is not None and i is not None and node.op == "hswish" and i + 7 < o:
                set_out(node, i + 7, "hswish output")
        elif node.op in PARAM_OPS and node.parents and node.weight_name:
            _shift_checks(node, fp_out(node.parents[0]), fp_out(node), par,
                          lambda v, node=node: set_out(node, v, "shift_cut"), notes)
    return notes


def _shift_checks(node: Node, i: Optional[int], o: Optional[int], par: Dict[str, int], set_o, notes) -> None:
    """shift_cut = w + i - o in [0, 16] (o lowered, or w lowered), then shift_bias = w + i - b in
    [min(0, shift_cut - 16), 16] (b lowered, or w lowered); nothing when a position is missing."""
    if i is None or o is None:
        notes.append("{}: an input or output is not quantized; shift checks skipped".format(node.name))
        return
    w = par[node.weight_name]
    shift_cut = w + i - o
    if shift_cut < 0:
        set_o(o + shift_cut)
    elif shift_cut > 16:
        par[node.weight_name] = w - shift_cut + 16
        notes.append("{}: weight fix position {} -> {} (shift_cut)".format(node.name, w, w - shift_cut + 16))
    if node.bias_name:
        w = par[node.weight_name]
        b = par[node.bias_name]
        shift_bias = w + i - b
        lo = min(0, -(24 - (8 + shift_cut)))
        if shift_bias < lo:
            par[node.bias_name] = b + shift_bias - lo
            notes.append("{}: bias fix position {} -> {} (shift_bias)".format(node.name, b, b + shift_bias - lo))
        elif shift_bias > 16:
            par[node.weight_name] = w - shift_bias + 16
            notes.append("{}: weight fix position {} -> {} (shift_bias)".format(node.name, w, w - shift_bias + 16))


def _resize_mode(node: Node) -> str:
    return str(node.attrs.get("mode", "nearest"))


class TestModel(Runner):
    """The test-mode quantized model: fixed fix positions, DPU rounding, adjusted positions.

    Images go through it channels-last (NHWC in memory) where every op of the graph computes the same values
    whatever the layout (channels_last_safe) and every convolution reads a quantized tensor: oneDNN runs
    convolutions on that layout natively, without the reorders into and out of its blocked layout that an NCHW
    call costs (on the MobileNetV3 benchmark the convolutions take about a quarter less time). The bits stay
    those of NCHW: a convolution adds products of quantized inputs and quantized weights, int8 values on
    power-of-two grids, and such sums are exact in float32 while they fit its 24-bit significand (a thousand
    int8 products do), so the order in which a kernel adds them cannot show. A float input (an uneven adaptive
    pool, which nndct leaves unquantized, before a conv: smp's PSPNet) would make them round, in an order that
    depends on the layout; such a graph stays NCHW. The output comes back in the standard layout.

    Calibration keeps NCHW: there biases move off the grid (bias correction) and the float reference convs use
    float weights, so sums round, and a layout's order of addition shows in their last bits. Those bits decide
    values at rounding boundaries, and through the corrected biases of later batches they spread (measured on
    the MobileNetV3 benchmark model channels-last: 4 of its activation fix positions moved in 4 batches)."""

    def __init__(self, g: Graph, fps: Dict[str, Dict[str, int]], biases: Dict[str, torch.Tensor],
                 shortcuts: bool = True) -> None:
        super().__init__(g)
        self.fps, self.biases = fps, biases
        self.out_fp = dict(fps["output"])
        self.coarse, in_fp = _on_coarse_grids(g, self.out_fp) if shortcuts else (frozenset(), {})
        # channels-last only where every convolution reads a quantized tensor (in_fp): a float input would make
        # its sums round, in an order that depends on the layout
        self.channels_last = shortcuts and channels_last_safe(g) and all(
            node.name in in_fp for node in g.nodes if node.op in CONV_OPS + CONV3D_OPS)
        # hardswish on a quantized input (conv, BN, hswish as nndct groups it), with a quantized output: its gate
        # in two passes, as an integer whose 1/128 the quantizer of the output takes into its own scaling
        self.gate_fast = frozenset(node.name for node in g.nodes if node.op == "hswish" and in_fp.get(node.name)
                                   is not None and self.out_fp.get(node.name) is not None and node.name in self.keys
                                   and fast_hswish_gate_holds(in_fp[node.name]))
        # quantized outputs that only convolutions and dense layers read are left as integers, the 2^-fp going
        # into the readers' weights: in_units[name] = fp
        self.in_units = _integer_outputs(g, self.out_fp) if shortcuts else {}
        producer = {g.input_id: self.input_node.name}
        producer.update((s.outs[0], s.node.name) for s in g.steps if s.node is not None and len(s.outs) == 1)
        self.in_scale: Dict[str, int] = {}  # param op -> fix position of the integer input it reads
        for r in g.steps:
            if r.node is None or not has_params(r.node) or r.node.op not in PARAM_OPS or not r.ins:
                continue
            fp = self.in_units.get(producer.get(r.ins[0], ""))
            if fp is not None:
                self.in_scale[r.node.name] = fp
        self.qparams = {}
        for node in g.nodes:
            if has_params(node):
                self.set_params(node, node.weight, None if node.bias is None else biases.get(node.name, node.bias))

    def set_params(self, node: Node, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        """A param op's float weight and bias, quantized at its fix positions, for the next forwards (fast
        finetune changes them between forwards)."""
        fps = self.fps["param"]
        w = fxp.quantize_param(weight, fps[node.weight_name])
        if self.channels_last and node.op in ("conv2d", "depthwise_conv2d") and w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)  # same values; oneDNN's own layout for NHWC
        b = None if bias is None else fxp.quantize_param(bias, fps[node.bias_name])
        fp = self.in_scale.get(node.name)
        if fp is not None:
            # exact: a power of two; each product x * w, and so every sum, is the same float
            w = w * 2.0 ** -fp
        self.qparams[node.name] = (w, b)

    def general(self) -> "TestModel":
        """The same model without the shortcuts (channels-last, rounding without the exact-half pass, the fast
        hswish gate, integer outputs): every node computed the general way, for tests to compare bits with."""
        return TestModel(self.g, self.fps, self.biases, shortcuts=False)

    def _hswish_gate(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return fast_hswish_gate(x, times_128=True) if node.name in self.gate_fast else hswish_gate(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out = self.run(x, lambda node: self.qparams[node.name], self._quant)
        return _standard_layout(out) if self.channels_last else out

    def _quant(self, node, val: torch.Tensor, act: fxp.Activation) -> torch.Tensor:
        fp = self.out_fp.get(node.name)
        if fp is None:
            # nndct's test mode leaves a tensor without fix position as it is (torchquantizer.py quantize_int:
            # `bnfp[1] is None`): one that held an inf or a nan in calibration. Tensors with a fix position are not
            # checked for inf or nan here (a pass over each; nndct skips them too, but a model that makes them in
            # test mode is broken, and the payload refuses non-finite predictions)
            if act is not None:
                act(val)
            return val
        return fxp.quantize_act_(val, fp, act, exact_half=node.name not in self.coarse,
                                 in_exp=7 if node.name in self.gate_fast else 0, unscale=node.name not in self.in_units,
                                 nonneg=_nonneg(node, act))


def _integer_outputs(g: Graph, out_fp: Dict[str, Optional[int]]) -> Dict[str, int]:
    """The quantized nodes whose output only param ops read, each as the input x of a convolution or dense layer
    (conv(2^fp x, 2^-fp w) = conv(x, w) bit for bit: scaling by a power of two is exact, in every product and
    sum): their test-mode output may stay as the integers. name -> fix position."""
    readers: Dict[int, List[Step]] = {}
    for step in g.steps:
        for v in step.ins:
            readers.setdefault(v, []).append(step)
    made = [(n, g.input_id) for n in g.nodes if n.op == "input"]
    made += [(s.node, s.outs[0]) for s in g.steps if s.node is not None and len(s.outs) == 1]
    res = {}
    for node, v in made:
        if node.name not in g.output_keys or out_fp.get(node.name) is None or node.attrs.get("skip_quant") or any(
                node.attrs.get(k) for k in ("list_out", "out_floats", "first_out")):
            continue
        rs = readers.get(v, [])
        if v == g.output_id or v in g.consts or not rs:
            continue
        if all(r.node is not None and has_params(r.node) and r.node.op in PARAM_OPS and r.ins[0] == v
               and v not in r.ins[1:] for r in rs):
            res[node.name] = out_fp[node.name]
    return res


# TorchScript kinds whose results have the same values whatever the memory layout of their inputs, and that
# neither alias nor view their inputs: a graph of these alone may run channels-last. A view, reshape, permute or
# slice is left out: a model written for NCHW may view memory it knows to be NCHW.
_LAYOUT_FREE = frozenset("aten::" + k for k in (
    "_convolution", "conv2d", "conv_transpose2d", "batch_norm", "relu", "relu_", "relu6", "relu6_", "hardtanh",
    "hardtanh_", "leaky_relu", "leaky_relu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "silu", "silu_", "prelu", "clamp", "clamp_", "add", "add_", "sub", "sub_", "mul",
    "mul_", "div", "div_", "rsub", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "upsample_bilinear2d",
    "upsample_nearest2d", "cat", "size", "Int", "dropout", "dropout_", "feature_dropout", "feature_dropout_",
    "constant_pad_nd")) | {"prim::NumToTensor", "prim::ListConstruct", "prim::Constant"}


def channels_last_safe(g: Graph) -> bool:
    """Whether the test-mode model may run g channels-last (on 4-D inputs): every step is layout-free
    (_LAYOUT_FREE) and at least one is a 2-D convolution."""
    return any(s.node is not None and s.node.op in ("conv2d", "depthwise_conv2d") for s in g.steps) and all(
        s.kind in _LAYOUT_FREE for s in g.steps)


def _standard_layout(out):
    """out with every channels-last tensor made contiguous (same values)."""
    if isinstance(out, torch.Tensor):
        return out.contiguous()
    if isinstance(out, (tuple, list)):
        return type(out)(_standard_layout(o) for o in out)
    return out


_PICKING = ("relu", "maxpool")  # ops whose every result element is one of their input's elements, or 0


def quantized_values(g: Graph) -> Dict[int, str]:
    """value id -> the key of the quantized output the value holds unchanged: that output itself, or it passed
    through ReLUs and max pools that are not quantized themselves (they pick values). A value is read in place by
    no one else (Runner.may_overwrite), so it is still as quantized when read."""
    keys = set(g.output_keys)
    held: Dict[int, str] = {}
    inp = next(n for n in g.nodes if n.op == "input")
    if inp.name in keys:
        held[g.input_id] = inp.name
    for step in g.steps:
        node = step.node
        if node is None or len(step.outs) != 1:
            continue
        if node.name in keys:
            if not node.attrs.get("skip_quant") and not any(
                    node.attrs.get(k) for k in ("list_out", "out_floats", "first_out")):
                held[step.outs[0]] = node.name
        elif node.op in _PICKING and step.ins and step.ins[0] in held:
            held[step.outs[0]] = held[step.ins[0]]
    return held


def quantized_sources(g: Graph) -> Dict[str, str]:
    """hswish node -> the quantized output (its key) that the node's first input holds unchanged, where it does."""
    held = quantized_values(g)
    return {s.node.name: held[s.ins[0]] for s in g.steps
            if s.node is not None and s.node.op == "hswish" and s.ins and s.ins[0] in held}


def _on_coarse_grids(g: Graph, out_fp: Dict[str, Optional[int]]):
    """The quantized nodes whose float results are, in test mode, multiples of 2^-(fp + 24) at their own fix
    position fp: those the quantizer may round without its exact-half pass (fixpoint._quantize_chunk_); and
    the fix position of every node's first input where that input is a quantized tensor.

    A quantized tensor holds int8 multiples of 2^-fp. The product of two such values is exact (16 significant
    bits), on the grid 2^-(a + b); a float sum of values on a grid stays on it (a rounded sum is a multiple of
    its ulp, itself a multiple of the grid); ReLU and max pooling pick values. Only these IEEE-exact ops count,
    on inputs that are quantized outputs themselves: a convolution's result depends on its kernel's algorithm
    (Winograd or FFT ones leave the grid), so it keeps the exact-half pass."""
    # value id -> fix position, for values that are quantized int8 tensors
    grid = {v: out_fp[k] for v, k in quantized_values(g).items() if out_fp.get(k) is not None}
    coarse = set()
    in_fp: Dict[str, int] = {}
    for step in g.steps:
        node = step.node
        if node is None or len(step.outs) != 1:
            continue
        if step.ins and step.ins[0] in grid:
            in_fp[node.name] = grid[step.ins[0]]
        o = grid.get(step.outs[0])
        if o is None or node.name not in out_fp:  # not quantized, or a picked value
            continue
        ins = [grid.get(v) for v in step.ins[:2]]
        fine: Optional[int] = None
        if node.op == "hswish" and ins[0] is not None:
            fine = ins[0] + 7  # x times its gate, quantized at fix position 7
        elif node.op == "elemwise_mul" and len(step.ins) == 2 and None not in ins:
            fine = ins[0] + ins[1]
        elif (node.op == "elemwise_add" and None not in ins and len(step.ins) in (2, 3)
              and (len(step.ins) == 2 or g.consts.get(step.ins[2]) == 1)):
            fine = max(ins)
        elif node.op in _PICKING and ins[0] is not None:
            fine = ins[0]
        if fine is not None and fine - o <= 24:
            coarse.add(node.name)
    return frozenset(coarse), in_fp
