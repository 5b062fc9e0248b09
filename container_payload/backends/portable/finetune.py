"""Fast finetune: vai_q_pytorch's AdaQuant on the portable engine, with memory bounded by design.

What pytorch_nndct does (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch, pytorch_binding/pytorch_nndct/qproc:
base.py `finetune`, adaquant.py `finetune_v2`, its default ft_mode 1; 3.5 sources), and how it is done here:
- Bias correction is off while finetuning (`AdaQuant.__enter__` sets nndct_param_corr 0). The network's inputs and
  the float outputs of its last quantized nodes are cached (here: the model's outputs, on disk, one file a batch).
- A calibration without bias correction gives the fix positions (`calibrate`); they do not move again: test mode
  (quant_mode 2) while finetuning, and the calibration after it keeps them (`keep_fp`).
- The net loss is, per output, the mean over batches of sqrt(mse(float output, quantized output)); one loss
  improves on another when none of its values is larger and not all are equal (`AverageMeter.__lt__`).
- Each conv-like op with parameters (conv 1d/2d/3d, depthwise, transposed, dense; `is_conv_like`), in graph order:
  its quantized input (the quantized model up to it) and its float output (the float model up to it) per batch,
  here cached on disk for the layer and read back batch by batch (nndct recomputes or caches in memory: the two
  give the same numbers, as the layers before it do not change while it is tuned). Adam on weight and bias,
  lr = 0.01 * std (halved at batch size 1; times 0.1 more when the quantized weights' SQNR / 8 passes 4.5); loss
  mse(layer(qin) -> its ReLU/ReLU6/hsigmoid/hswish if one follows, quantized, fout -> the float activation) plus,
  with quant_opt > 0, mse(weight, float weight). Weights are quantized in place (nndct's `inplace` quantizer):
  on the grid when each epoch over the batches starts, off it during the epoch's steps, which compute with them
  as they are; the output quantization passes gradients straight through. Up to 100 epochs; after each the net
  loss is evaluated with the weights snapped to the grid: an improvement (any output better by more than 0
  parts in 10,000) keeps the weights, anything else restores the best and halves both learning rates, and
  the layer ends when both are below 1e-5 or the loss equals the last rejected one.
- Then nndct exports the quant model's state_dict (`param.pth` in its output directory, every parameter on its
  grid), and the ordinary calibration runs with the fix positions kept and bias correction back on; test mode
  loads the file (`load_ft_param`) and subtracts bias_corr.pth as usual.
The float targets come from the portable engine's float run, which computes hardswish and hardsigmoid the DPU's way
(2731/16384, the gate on its 2^-7 grid), as nndct's float clone does: its modules keep their quant mode, and only
the tensors outside the quant part go unquantized (nn/modules/hardswish.py). One difference: the net loss is taken
at the model's outputs, where nndct takes its last quantized nodes (the same tensors when the model ends in one).
"""

import math
import os
import shutil
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from container_payload.graph.nndct import PARAM_OPS, Graph, Node

from . import fixpoint as fxp
from .engine import HSIGMOID_SCALE, Calibrator, Runner, TestModel, _standard_layout, has_params

ITERS = 100  # finetune_v2's epochs per layer (25 with nndct_ip_asr)
LR_FACTOR = 0.01  # nndct_finetune_lr_factor's default
MIN_LR = 1e-5
_ACTS = ("relu", "relu6", "hsigmoid", "hswish")
_FLOAT_ACT = {"relu": F.relu, "relu6": F.relu6, "hsigmoid": F.hardsigmoid, "hswish": F.hardswish}

Batches = Callable[[], Iterable[torch.Tensor]]


class StopForward(Exception):
    pass


class FinetuneDoesNotFit(RuntimeError):
    pass


class Adam:
    """torch.optim.Adam's update for one tensor (betas 0.9 and 0.999, eps 1e-8, as nndct creates it), written out:
    constructing torch's optimizer imports torch._dynamo, seconds of a short run."""

    def __init__(self, param: torch.Tensor, lr: float) -> None:
        self.param = param
        self.lr = lr
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    def zero_grad(self) -> None:
        self.param.grad = None

    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        self.t += 1
        self.m.lerp_(grad, 0.1)
        self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        denom = (self.v.sqrt() / math.sqrt(1 - 0.999 ** self.t)).add_(1e-8)
        with torch.no_grad():
            self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - 0.9 ** self.t))


def _measure(sizes: Dict[str, int], consts: Dict[int, object]) -> Callable:
    """An `after` hook recording, for one batch, the disk cache a param op needs: its input and output, and the
    values live at it in three forwards (FastFinetune._cuts)."""
    def after(node, step, env, val) -> None:
        if node.op in PARAM_OPS and isinstance(val, torch.Tensor) and step.ins:
            live = sum(4 * int(v.numel()) for k, v in env.items() if k not in consts and isinstance(v, torch.Tensor))
            sizes[node.name] = 4 * int(val.numel()) + 3 * live
    return after


class Layer:
    """One op to finetune: its node, the activation nndct pairs with it, and the output its loss quantizes."""

    def __init__(self, node: Node, act: Optional[Node], out_key: str) -> None:
        self.node = node
        self.act = act
        self.out_key = out_key

    @property
    def name(self) -> str:
        return self.node.name


def finetune_layers(g: Graph) -> List[Layer]:
    """The conv-like ops with parameters, in graph order, each with the activation that follows it alone
    (adaquant.py collect_layer_act_pair: conv, depthwise and transposed convs with ReLU, ReLU6, hsigmoid,
    hswish; a dense layer keeps its own output)."""
    layers, seen = [], set()
    for node in g.nodes:
        if node.op not in PARAM_OPS or not has_params(node) or node.weight_name in seen:
            continue
        seen.add(node.weight_name)
        act = None
        if node.op != "dense" and len(node.children) == 1 and node.children[0].op in _ACTS:
            act = node.children[0]
        layers.append(Layer(node, act, (act or node).name))
    return layers


class _FloatRunner(Runner):
    """The float model: the same graph with nothing quantized."""

    def __init__(self, g: Graph) -> None:
        super().__init__(g)
        self.keys = set()

    def forward(self, x: torch.Tensor, params: Callable, after: Optional[Callable] = None):
        with torch.no_grad():
            return self.run(x, params, lambda node, val, act: val, after)


class DiskCache:
    """Tensors written one by one to .npy files in a directory of the run's staging area and read back memory-
    mapped, so that memory holds one batch at a time whatever the number of samples."""

    def __init__(self, root: str, name: str) -> None:
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.count = 0
        self.bytes = 0

    def put(self, t: torch.Tensor) -> None:
        arr = t.detach().contiguous().cpu().numpy()
        np.save(os.path.join(self.dir, "{}.npy".format(self.count)), arr)
        self.count += 1
        self.bytes += arr.nbytes

    def get(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(np.load(os.path.join(self.dir, "{}.npy".format(i)), mmap_mode="r")))

    def put_values(self, values: Dict[int, object]) -> None:
        """A forward pass's live values (value id -> tensor or other value), with torch.save."""
        path = os.path.join(self.dir, "{}.pt".format(self.count))
        torch.save(values, path)
        self.count += 1
        self.bytes += os.path.getsize(path)

    def get_values(self, i: int) -> Dict[int, object]:
        return torch.load(os.path.join(self.dir, "{}.pt".format(i)))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self.get(i) for i in range(self.count))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    res = []
    for item in out:
        res.extend(_outputs(item))
    return res


class Loss:
    """A net loss: per output, the mean over batches (AverageMeter)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)

    def better_than(self, other: "Loss") -> bool:
        # AverageMeter.__lt__: no value larger, and not all equal
        return all(a <= b for a, b in zip(self.values, other.values)) and self.values != other.values

    def same_as(self, other: Optional["Loss"]) -> bool:
        return other is not None and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(self.values, other.values))

    def ratio_gain(self, old: "Loss") -> float:
        """max over outputs of (old - new) / old in parts in 10,000 (loss_diff_ratio)."""
        return max(((o - n) / o * 10000 if o else 0.0) for o, n in zip(old.values, self.values))


class FastFinetune:
    """Runs nndct's fast finetune on graph g over the batches (a callable giving a fresh iterator each time).

    After run(): params[node name] = (weight, bias) on their grids, the values nndct's `param.pth` holds, and
    fps the fix positions found before finetuning, which the calibration that follows keeps."""

    def __init__(self, g: Graph, batches: Batches, count: int, cache_root: str, quant_opt: int = 3,
                 progress: Optional[Callable[[str, int, int], None]] = None) -> None:
        self.g = g
        self.batches = batches
        self.count = count
        self.cache_root = cache_root
        self.quant_opt = quant_opt
        self.progress = progress or (lambda name, done, total: None)
        self.layers = finetune_layers(g)
        self.params: Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        self.fps: Dict[str, Dict[str, Optional[int]]] = {}
        self.report: Dict[str, object] = {}
        self._float = _FloatRunner(g)
        self._float_params = {n.name: (n.weight, n.bias) for n in g.nodes if has_params(n)}

    # ---- the pieces -------------------------------------------------------------------------------------------
    def _calibrate(self) -> None:
        calib = Calibrator(self.g, bias_correction=False)
        for k, batch in enumerate(self.batches()):
            calib.step(batch.float(), self.count - k - 1)
        fps = calib.fix_positions()
        self.fps = {"param": dict(fps["param"]), "output": dict(fps["output"])}
        # nndct's calibration quantized every parameter in place: that is where finetuning starts
        for node in self.g.nodes:
            if has_params(node):
                w = fxp.quantize_param(node.weight, self.fps["param"][node.weight_name])
                b = None if node.bias is None else fxp.quantize_param(node.bias, self.fps["param"][node.bias_name])
                self.params[node.name] = (w, b)

    def _test_model(self, shortcuts: bool = True) -> TestModel:
        tm = TestModel(self.g, self.fps, {}, shortcuts=shortcuts)
        for node in self.g.nodes:
            if node.name in self.params:
                tm.set_params(node, *self.params[node.name])
        return tm

    def _net_loss(self, tm: TestModel, float_outs: List[DiskCache]) -> Loss:
        sums = [0.0] * len(float_outs)
        for k, batch in enumerate(self.batches()):
            got = _outputs(tm(batch.float()))
            for i, (cache, q) in enumerate(zip(float_outs, got)):
                sums[i] += math.sqrt(F.mse_loss(cache.get(k), q).item())
        return Loss([s / max(self.count, 1) for s in sums])

    def _cuts(self, index: int, prev: Optional[List["DiskCache"]], prev_index: int, general: TestModel,
              tm: TestModel) -> Iterator[List[Dict[int, object]]]:
        """Per batch, the live values before step index of three forwards: the general quantized model (every
        value at its scale), the fast one (TestModel's shortcuts), and the float model. From the batches for the
        first layer; after that from the values before the previous layer's step (prev), run on from there with
        the parameters that layer was just given: each step runs once per layer instead of once per layer before
        it."""
        runners = ((general, lambda n: general.qparams[n.name], general._quant),
                   (tm, lambda n: tm.qparams[n.name], tm._quant),
                   (self._float, lambda n: self._float_params[n.name], lambda node, val, act: val))
        with torch.no_grad():
            if prev is None:
                for batch in self.batches():
                    batch = batch.float()
                    yield [runner.run(_layout(runner, batch), params, quant, stop_before=index)
                           for runner, params, quant in runners]
                return
            for k in range(prev[0].count):
                envs = []
                for cache, (runner, params, quant) in zip(prev, runners):
                    env: Dict[int, object] = dict(self.g.consts)
                    env.update(cache.get_values(k))
                    envs.append(runner.run_steps(env, set(), params, quant, None, prev_index, stop_before=index))
                yield envs

    def _capture(self, layer: Layer, envs: Iterator[List[Dict[int, object]]], qin: "DiskCache",
                 fout: "DiskCache", cuts: List["DiskCache"]) -> None:
        """Per batch: the layer's quantized input and its float output for the training steps, and the three
        forwards' values before it (cuts; the fast model's is where the net loss resumes after each epoch)."""
        node = layer.node
        wf, bf = self._float_params[node.name]
        consts = self.g.consts
        for general_env, tm_env, float_env in envs:
            x = general_env[node.step.ins[0]]
            qin.put(x.detach().float().contiguous())
            with torch.no_grad():
                fout.put(self._float._param_op(node, float_env[node.step.ins[0]], wf, bf).contiguous())
            for cache, env in zip(cuts, (general_env, tm_env, float_env)):
                cache.put_values({k: v for k, v in env.items() if k not in consts})

    def _net_loss_from(self, tm: TestModel, cut: DiskCache, index: int, float_outs: List[DiskCache]) -> Loss:
        """_net_loss, the forward resumed before step index from the values cut holds."""
        sums = [0.0] * len(float_outs)
        params = lambda n: tm.qparams[n.name]  # noqa: E731
        for k in range(cut.count):
            env: Dict[int, object] = dict(self.g.consts)
            env.update(cut.get_values(k))
            with torch.no_grad():
                out = tm.run_steps(env, set(), params, tm._quant, None, index)
            got = _outputs(_standard_layout(out) if tm.channels_last else out)
            for i, (cache, q) in enumerate(zip(float_outs, got)):
                sums[i] += math.sqrt(F.mse_loss(cache.get(k), q).item())
        return Loss([s / max(self.count, 1) for s in sums])

    def _layer_out(self, layer: Layer, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        y = self._float._param_op(layer.node, x, w, b)
        act = layer.act.op if layer.act is not None else None
        if act == "relu":
            y = F.relu(y)
        elif act == "relu6":
            y = F.relu6(y)
        elif act in ("hsigmoid", "hswish"):
            gate = F.relu6(y + 3.0) * HSIGMOID_SCALE
            if act == "hswish":
                gate = _ste(gate, lambda t: fxp.quantize_act(t, 7))
                y = y * gate
            else:
                y = gate
        fp = self.fps["output"].get(layer.out_key)
        if fp is not None and layer.out_key in set(self.g.output_keys):
            y = _ste(y, lambda t: fxp.quantize_act(t, fp))
        return y

    # ---- one layer ----------------------------------------------------------------------------------------------
    def _optimize(self, layer: Layer, tm: TestModel, qin: DiskCache, fout: DiskCache, net_loss: Loss,
                  float_outs: List[DiskCache], batch_size: int, cut: DiskCache, index: int) -> Tuple[Loss, int, int]:
        node = layer.node
        wf, bf = self._float_params[node.name]
        w0, b0 = self.params[node.name]
        batch_factor = 0.5 if batch_size == 1 else 1.0
        lr_factor = LR_FACTOR * batch_factor
        if _quant_eff(w0, wf) > 4.5:
            lr_factor = 0.1 * lr_factor * batch_factor
        w = w0.clone().requires_grad_(True)
        opt_w = Adam(w, lr_factor * float(w0.std()))
        b, opt_b = None, None
        if b0 is not None:
            b = b0.clone().requires_grad_(True)
            lr_b = 0.0 if b0.numel() == 1 else lr_factor * float(b0.std())
            opt_b = Adam(b, lr_b)
        wq_fp = self.fps["param"][node.weight_name]
        bq_fp = self.fps["param"][node.bias_name] if b is not None else None
        best = (w0, b0)
        prev: Optional[Loss] = None
        act_f = _FLOAT_ACT.get(layer.act.op) if layer.act is not None else None
        accepted = epochs = 0
        for _ in range(ITERS):
            epochs += 1
            with torch.enable_grad():
                for x, target in zip(qin, fout):
                    if act_f is not None:
                        target = act_f(target)
                    out = self._layer_out(layer, x, w, b)
                    loss = F.mse_loss(out, target)
                    if self.quant_opt > 0:
                        loss = loss + F.mse_loss(w, wf)
                    opt_w.zero_grad()
                    if opt_b is not None:
                        opt_b.zero_grad()
                    loss.backward()
                    opt_w.step()
                    if opt_b is not None:
                        opt_b.step()
            with torch.no_grad():  # nndct re-quantizes the parameters in place before the net loss
                w.copy_(fxp.quantize_param(w, wq_fp))
                if b is not None:
                    b.copy_(fxp.quantize_param(b, bq_fp))
            tm.set_params(node, w.detach(), None if b is None else b.detach())
            loss_now = self._net_loss_from(tm, cut, index, float_outs)
            if loss_now.better_than(net_loss) and loss_now.ratio_gain(net_loss) > 0:
                best = (w.detach().clone(), None if b is None else b.detach().clone())
                net_loss = loss_now
                accepted += 1
            else:
                with torch.no_grad():
                    w.copy_(best[0])
                    if b is not None:
                        b.copy_(best[1])
                for opt in (opt_w, opt_b):
                    if opt is not None:
                        opt.lr /= 2.0
                if (opt_w.lr < MIN_LR and (opt_b is None or opt_b.lr < MIN_LR)) or loss_now.same_as(prev):
                    break
                prev = loss_now
        self.params[node.name] = best
        tm.set_params(node, *best)
        return net_loss, epochs, accepted

    def _check_disk(self, sizes: Dict[str, int], out_bytes: int) -> None:
        """Before any work: the disk cache's largest need (the model's float outputs, and the layer whose input
        and output are the largest, for all batches) against the free space where it goes."""
        layer_bytes = max((sizes.get(layer.name, 0) for layer in self.layers), default=0)
        need = (out_bytes + layer_bytes) * self.count
        free = shutil.disk_usage(self.cache_root).free
        self.report["cache_needs_mb"] = round(need / 2 ** 20, 1)
        if need * 1.1 > free:
            raise FinetuneDoesNotFit(
                "fast finetune caches each layer's inputs and outputs on disk, one batch in memory at a time: {:.1f} "
                "GB for {} batches, and {} has {:.1f} GB free; pass --finetune-samples with fewer samples, or free "
                "disk space".format(need / 2 ** 30, self.count, self.cache_root, free / 2 ** 30))

    # ---- the whole -----------------------------------------------------------------------------------------
    def run(self) -> None:
        start = time.perf_counter()
        os.makedirs(self.cache_root, exist_ok=True)
        float_outs: List[DiskCache] = []
        try:
            batch_size = 0
            for k, batch in enumerate(self.batches()):
                batch_size = batch_size or int(batch.shape[0])
                sizes = {} if k == 0 else None
                outs = _outputs(self._float.forward(batch.float(), lambda n: self._float_params[n.name],
                                                    None if sizes is None else _measure(sizes, self.g.consts)))
                if sizes is not None:
                    self._check_disk(sizes, sum(int(o.numel()) for o in outs) * 4)
                while len(float_outs) < len(outs):
                    float_outs.append(DiskCache(self.cache_root, "float_output_{}".format(len(float_outs))))
                for cache, out in zip(float_outs, outs):
                    cache.put(out)
            self._calibrate()
            self.progress("calibrated", 0, len(self.layers))
            tm = self._test_model()
            net_loss = initial = self._net_loss(tm, float_outs)
            general = None
            per_layer = []
            general = self._test_model(shortcuts=False)
            prev, prev_index = None, 0
            for i, layer in enumerate(self.layers):
                t0 = time.perf_counter()
                index = next(k for k, step in enumerate(self.g.steps) if step is layer.node.step)
                qin, fout = DiskCache(self.cache_root, "in"), DiskCache(self.cache_root, "out")
                cuts = [DiskCache(self.cache_root, "cut{}_{}".format(i, name)) for name in ("general", "fast", "float")]
                try:
                    self._capture(layer, self._cuts(index, prev, prev_index, general, tm), qin, fout, cuts)
                    net_loss, epochs, accepted = self._optimize(layer, tm, qin, fout, net_loss, float_outs,
                                                                batch_size, cuts[1], index)
                    general.set_params(layer.node, *self.params[layer.name])
                    cache_bytes = sum(c.bytes for c in [qin, fout] + cuts)
                finally:
                    for cache in [qin, fout] + (prev or []):
                        cache.remove()
                prev, prev_index = cuts, index
                per_layer.append({"node": layer.name, "epochs": epochs, "improved": accepted,
                                  "loss": [round(v, 6) for v in net_loss.values],
                                  "cache_mb": round(cache_bytes / 2 ** 20, 1),
                                  "seconds": round(time.perf_counter() - t0, 2)})
                self.progress(layer.name, i + 1, len(self.layers))
            self.report.update(layers=per_layer, initial_loss=initial.values, final_loss=net_loss.values,
                               engine_seconds=round(time.perf_counter() - start, 2),
                               float_outputs_mb=round(sum(c.bytes for c in float_outs) / 2 ** 20, 1))
        finally:
            shutil.rmtree(self.cache_root, ignore_errors=True)


def _layout(tm: TestModel, x: torch.Tensor) -> torch.Tensor:
    """x as TestModel.__call__ hands it to the graph."""
    return x.contiguous(memory_format=torch.channels_last) if getattr(tm, "channels_last", False) and x.dim() == 4 \
        else x


def _ste(y: torch.Tensor, q: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """q(y) forward, gradient straight through (nndct's fix neuron changes the data under autograd)."""
    with torch.no_grad():
        delta = q(y.detach()) - y.detach()
    return y + delta


def _quant_eff(q: torch.Tensor, f: torch.Tensor) -> float:
    """adaquant.py quant_eff: the quantized weights' SQNR in dB over 8."""
    noise = float(torch.mean((f - q) ** 2))
    if noise == 0:
        return float("inf")
    return 10 * math.log10(float(torch.mean(f ** 2)) / noise) / 8.0
