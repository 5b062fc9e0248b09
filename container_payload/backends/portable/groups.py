"""Quantization groups: which nodes share a quantized output, and which outputs nndct quantizes.

What nndct does and where it says so (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch):
- Quantization groups (nndct_shared/quantization/commander.py, nndct_shared/nndct_graph/utils.py `group_up`):
  relu, relu6, leaky_relu, flatten, transpose, permute, contiguous and the other SoftFuse* ops join their
  parent's group when they are its only child and it theirs (and the parent is not a float custom op);
  reshape always joins its parent's group. A group's quantized output (nndct_graph/nndctgraph_holder.py
  `quant_output`) is its last member, or the concat that member solely feeds; MULTIPLE_OUTPUTS_OPS (reshape,
  flatten, contiguous, permute, ...) hand it back to the member before them.
- Which outputs are quantized (nndct_shared/quantization/quant_strategy.py `_get_default_quant_config`): the
  group end of every quantizable node, then the group end of every parent of a quantizable node that is not
  input or concat (so an unsupported op feeding a conv gets its output quantized too), provided that end puts
  out a float tensor (a `shape` node's int output is skipped). The first rule has no such check: a quantizable
  node with an int result (`h * w`, `8 - h % 8` of sizes) is configured and never quantized, and so is an
  adaptive average pool whose output size does not divide its input's; quant_info.json gives both a null fix
  position (seen on real runs: smp MAnet's `nndct_elemwise_mul_61`, PSPNet's and VGG's pools).
- Reshape joins the group of its first parent that is not a `shape` node (nndct_shared/quantization/
  commander.py `SoftFuseReshape`); shape nodes count as children of the tensor they read (graph.children).
"""
from typing import Dict, List

import torch
from torch import nn

from container_payload.graph.nndct import CONV1D_OPS, CONV3D_OPS, CONV_OPS, Graph, Node, capture

# NndctGraphHolder.QUANTIZABLE_OPS (nndct_shared/nndct_graph/nndctgraph_holder.py), short names
QUANTIZABLE = frozenset(CONV_OPS + CONV1D_OPS + CONV3D_OPS + (
    "dense", "batch_norm", "layer_norm", "instance_norm", "group_norm", "input", "maxpool", "avgpool",
    "adaptive_avg_pool2d", "concat", "elemwise_add", "elemwise_mul", "elemwise_div", "elementwise_sub", "rsub",
    "max", "min", "mean", "sum", "resize", "pad", "hswish", "hsigmoid", "matmul", "softmax", "prelu", "sqrt",
    "GELU", "mish"))
# NndctGraphHolder.MULTIPLE_OUTPUTS_OPS: no quantized output of their own, they hand on their group's
SHAPE_OPS = frozenset(("chunk", "strided_slice", "permute", "flatten", "reshape", "pixel_shuffle", "contiguous",
                       "squeeze", "unsqueeze"))
# QuantConfigerCommander's SoftFuse* group_up rules (nndct_shared/quantization/commander.py)
SOFT_FUSED = frozenset(("hardtanh", "relu", "leaky_relu", "relu6", "reluk", "channel_scale", "flatten", "squeeze",
                        "pixel_shuffle", "split", "strided_slice", "transpose", "tile", "up_sampling", "dropout",
                        "contiguous", "chunk", "permute", "expand", "copy_", "repeat", "unsqueeze"))


def quantization_graph(model: nn.Module, sample: torch.Tensor, *, relu6_as_relu: bool) -> Graph:
    """nndct's graph of model (container_payload/graph), its nodes grouped for quantization."""
    g = capture(model, sample, relu6_as_relu=relu6_as_relu)
    group(g)
    return g


def group(g: Graph) -> None:
    """Set g.groups, g.quant_out, g.output_keys and g.null_params as nndct's quantization config has them."""
    groups: Dict[str, List[Node]] = {n.name: [n] for n in g.nodes}

    def glue(start: Node, n: Node) -> None:
        members = groups[start.name]
        for m in groups[n.name]:
            if m not in members:
                members.append(m)
        for m in members:
            groups[m.name] = members

    def reshape_parent(p: Node) -> bool:
        # commander.py SoftFuseReshape: not a shape node, nor a mul of shape values
        if p.op == "shape":
            return False
        if p.op == "elemwise_mul" and p.parents:
            return reshape_parent(p.parents[0])
        return True

    changed = True
    while changed:
        changed = False
        for n in g.nodes:
            if groups[n.name][0] is not n:
                continue
            if n.op in SOFT_FUSED and len(n.parents) == 1 and len(n.parents[0].children) == 1 and \
                    not n.parents[0].custom:
                glue(groups[n.parents[0].name][0], n)
                changed = True
            elif n.op == "reshape":
                p = next((p for p in n.parents if reshape_parent(p)), None)
                if p is not None:
                    glue(groups[p.name][0], n)
                    changed = True
    for k in groups:
        groups[k] = sorted(groups[k], key=lambda m: m.idx)
    g.groups = groups

    def quant_output(n: Node) -> Node:
        members = groups[n.name]
        end = members[-1]
        if len(end.children) == 1 and end.children[0].op == "concat":
            return end.children[0]
        i = len(members) - 1
        while end.op in SHAPE_OPS and i > 0:
            i -= 1
            end = members[i]
        while end.op in SHAPE_OPS and end.parents:
            end = end.parents[0]
        return end

    g.quant_out = {n.name: quant_output(n) for n in g.nodes}
    keys: List[str] = []
    for n in g.nodes:
        end = g.quant_out[n.name]
        if n.op in QUANTIZABLE and end.name not in keys:
            # every quantizable node's group end is configured, whatever its dtype (torch_qstrategy.py
            # TorchNndctQstrategy.create_quant_config checks the dtype for the parents' ends only): an int end, as
            # `h * w` of sizes, is never quantized and quant_info.json lists it with a null fix position
            keys.append(end.name)
            if not end.float_out:
                end.attrs["skip_quant"] = True
    for n in g.nodes:
        if n.op in QUANTIZABLE and n.op not in ("input", "concat"):
            for p in n.parents:
                end = g.quant_out[p.name]
                if end.name not in keys and end.op != "shape" and end.float_out:  # int output: not quantized
                    keys.append(end.name)
    for n in g.nodes:
        # torch_qstrategy.py: an input whose only child is a float custom op is not quantized (its entry deleted)
        if n.op == "input" and len(n.children) == 1 and n.children[0].custom and g.quant_out[n.name].name in keys:
            keys.remove(g.quant_out[n.name].name)
    g.output_keys = keys
    seen = {n.weight_name for n in g.nodes} | {n.bias_name for n in g.nodes}
    g.null_params = []
    for n in g.nodes:
        if n.op in QUANTIZABLE and not (n.weight is not None and n.weight_name):
            for key in n.attrs.get("free_params", ()):
                name = g.full(key)
                if name not in seen:
                    seen.add(name)
                    g.null_params.append(name)
