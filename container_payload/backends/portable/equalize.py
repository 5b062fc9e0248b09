"""Cross-layer weight equalization, as vai_q_pytorch applies it before calibration (quant_opt > 0).

Followed from Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch/nndct_shared/optimization/commander.py
(`equalize_weights_cross_conv_layers`, `_collect_layer_groups`, `_convert_layer_group_to_equalized_groups`,
`_scale_weights_and_bias_with_conv_reluk`, `_combine_weight_and_bias`), which re-implements Nagel et al. 2019:

- Layer groups come from a depth-first walk from the input. Convs (and conv-transposes) join the current group;
  relu and pools pass through it; any other op, and any conv, relu or pool with more than one consumer, closes it.
  Each call of the original starts a new list when it is handed an empty one (`if not conv_group: conv_group =
  []`), so the branches of a fork never share a group: two convs reading the same tensor are not a pair. (Its
  iterative twin, used above a graph depth of 900, groups the same way.)
- Consecutive convs of a group form pairs (c0, c1), equalized once each, in order. With r0 the per-output-channel
  max |w| of c0 (its bias, divided by a shrink factor, counted as one more weight) and r1 the per-input-channel
  max |w| of c1: s = r0 / sqrt(r0 r1) (1 where that is 0, or where r0 + r1 < 0.5); c0's weights and bias are
  divided by s, c1's weights multiplied by s.
- Layouts as `_get_weight_data` and `_scale_weights_and_bias_with_conv_reluk` use them: c0's rows are its output
  channels (a grouped conv-transpose's groups stacked, a depthwise conv-transpose one row per channel); c1's
  columns its input channels (a grouped conv's groups side by side).

Computed in float32 numpy, in nndct's OHWI weight layout, like the original, so that its thresholds and
reductions see the same numbers.
"""

import sys
from typing import List, Optional, Tuple

import numpy as np
import torch

from container_payload.graph.nndct import CONV3D_OPS, CONV_OPS, Graph, Node

_ACT = ("relu",)
_POOL = ("maxpool", "adaptive_avg_pool2d", "avgpool")
# commander.py _CLE_TYPES: the emulated convs, 3-d ones included
_CLE = CONV_OPS + CONV3D_OPS


def equalize(g: Graph) -> int:
    """Equalize g's conv pairs in place; returns how many pairs were equalized."""
    groups: List[List[Node]] = []
    inputs = [n for n in g.nodes if n.op == "input"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(g.nodes) + 1000))
    try:
        for n in inputs:
            _collect(n, groups, [], [])
    finally:
        sys.setrecursionlimit(limit)
    pairs: List[Tuple[Node, Node]] = []
    for group in groups:
        prev = group[0]
        for nxt in group[1:]:
            if prev.op in _CLE and nxt.op in _CLE:
                pairs.append((prev, nxt))
            prev = nxt
    done = 0
    for c0, c1 in pairs:
        if c0.weight is not None and c1.weight is not None and _scale_pair(c0, c1):
            done += 1
    return done


def _collect(node: Node, groups: List[List[Node]], visited: List[Node], group: List[Node]) -> None:
    def gather(gr: List[Node]) -> List[Node]:
        if len(gr) > 1 and gr not in groups:
            groups.append(gr)
        return []

    if not group:
        group = []
    if node in visited:
        return
    visited.append(node)
    if node.op in _CLE:
        group.append(node)
        if len(node.children) > 1:
            group = gather(group)
    elif node.op in _ACT or node.op in _POOL:
        if len(node.children) > 1:
            group = gather(group)
    else:
        group = gather(group)
    for c in node.children:
        _collect(c, groups, visited, group)
    gather(group)


def _ohwi(n: Node) -> np.ndarray:
    """The weight in nndct's layout: [out, kh, kw, in/groups] (conv-transposes swapped to out-first); a 3-d
    conv's as [out, kh, kd, kw, in/groups] (commander.py _OP_LAYOUTS: "OHDWI")."""
    w = n.weight
    if n.op.startswith("conv_transpose") or n.op.startswith("depthwise_conv_transpose"):
        w = w.transpose(0, 1)
    order = (0, 3, 2, 4, 1) if w.dim() == 5 else (0, 2, 3, 1)
    return w.permute(*order).contiguous().numpy().astype(np.float32, copy=False)


def _rows_out(n: Node) -> np.ndarray:
    """c0's weight as nndct scales it, one row per output channel: OHWI; a grouped conv-transpose's groups
    stacked along O ([O/g, H, W, I] -> [O, H, W, I/g]); a depthwise conv-transpose as [I, H, W, multiplier]."""
    if n.op.startswith("depthwise_conv_transpose"):
        return n.weight.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32, copy=False)
    w = _ohwi(n)
    groups = n.attrs.get("groups", 1)
    if n.op.startswith("conv_transpose") and groups > 1:
        w = np.concatenate(np.split(w, groups, axis=3), axis=0)
    return w


def _combine_weight_and_bias(w: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    if bias is None:
        return w
    bias_clamp = bias.copy().reshape(-1, 1)
    wc = w.copy()
    if np.count_nonzero(w) != w.size:
        for ch in range(wc.shape[0]):
            nz = np.count_nonzero(wc[ch])
            if nz == 0:
                bias_clamp[ch] = 0.0
                wc[ch] = 1e-7
            elif nz != wc[ch].size:
                minval = np.min(np.fabs(wc[ch][wc[ch] != 0.0]))
                wc[ch] = np.where(wc[ch] == 0.0, minval, wc[ch])
    wc = np.where(np.fabs(wc) < 1e-7, np.float32(1e-7), wc).astype(np.float32)
    factor = np.fabs(bias_clamp) / np.fabs(wc)
    bmax = np.fabs(bias).max()
    if bmax < 10 and bmax / np.fabs(wc).max() < 20:
        shrink = 5 if (np.median(factor) > 100 or factor.mean() > 1000) else 2
    elif np.median(factor) > 30 or factor.mean() > 500:
        shrink = 20
    elif np.median(factor) > 15 or factor.mean() > 100:
        shrink = 10
    else:
        shrink = 5
    return np.concatenate((w, bias_clamp / shrink), axis=1)


def _scale_pair(c0: Node, c1: Node) -> bool:
    w0 = _rows_out(c0)
    b0 = c0.bias.numpy().astype(np.float32, copy=True) if c0.bias is not None else None
    w1 = _ohwi(c1)
    groups1 = c1.attrs.get("groups", 1) if c1.op in ("conv2d", "depthwise_conv2d") else 1
    if groups1 > 1:
        # [O, H, W, I/g] -> [O/g, H, W, I]: input channel k*(I/g)+j of group k sits in column j of its rows
        w1 = np.concatenate(np.split(w1, groups1, axis=0), axis=3)
    w0b = _combine_weight_and_bias(w0.reshape(w0.shape[0], -1), b0)
    r0 = np.max(np.fabs(w0b), axis=1)
    r1 = np.max(np.fabs(w1), axis=tuple(range(w1.ndim - 1)))
    if r0.shape != r1.shape:
        return False  # channel counts disagree (a depthwise conv-transpose with a multiplier): nndct would fail
    sq = np.sqrt(r0 * r1)
    scale = np.ones_like(r0)
    scale = np.where(sq != 0, r0 / np.where(sq != 0, sq, 1), scale)
    scale = np.where((r0 + r1) < 0.5, 1, scale).astype(np.float32)
    s = torch.from_numpy(scale)
    if c0.op.startswith("conv_transpose"):
        # torch's [I, O/g, kh, kw]: output channel k*(O/g) + j is column j of group k's rows
        g0 = c0.attrs.get("groups", 1)
        cin, per = c0.weight.shape[:2]
        c0.weight = (c0.weight.reshape(g0, cin // g0, per, *c0.weight.shape[2:]) /
                     s.view(g0, 1, per, 1, 1)).reshape(c0.weight.shape)
    else:  # convs, and depthwise conv-transposes ([C, 1, kh, kw]: output channel c is row c)
        c0.weight = c0.weight / s.view(-1, *[1] * (c0.weight.dim() - 1))
    if c0.bias is not None:
        c0.bias = c0.bias / s
    if c1.op.startswith("conv_transpose") or c1.op.startswith("depthwise_conv_transpose"):
        c1.weight = c1.weight * s.view(-1, 1, 1, 1)  # torch's [I, O/g, kh, kw]: one row per input channel
    elif groups1 > 1:
        per = c1.weight.shape[1]
        # column j of group k carries input channel k*per + j
        sg = s.view(groups1, 1, per, 1, 1)
        c1.weight = (c1.weight.view(groups1, -1, per, *c1.weight.shape[2:]) * sg).view_as(c1.weight)
    else:
        c1.weight = c1.weight * s.view(1, -1, *[1] * (c1.weight.dim() - 2))
    return True
