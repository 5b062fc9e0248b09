"""The model as vai_q_pytorch sees it: captured with torch.fx, BatchNorm folded, nodes numbered and grouped.

What nndct does and where it says so (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch):
- BatchNorm after a conv or conv-transpose is folded into it, w' = w * s, b' = b * s + beta - mean * s with
  s = gamma / sqrt(var + eps) (nndct_shared/optimization/fuse_conv_bn.py); a conv without bias gains
  `<module>.bias`. Dropout is removed (nndct_shared/optimization/optimizer.py).
- Node names are `nndct_<op>_<n>`, n the index in the BN-folded graph in execution order (DESIGN.md section 9,
  seen on real runs); op names are NNDCT_OP's values (nndct_shared/base/key_names.py).
- Quantization groups (nndct_shared/quantization/commander.py, nndct_shared/nndct_graph/utils.py `group_up`):
  relu, relu6, leaky_relu and flatten join their parent's group when they are its only child and it theirs;
  reshape always joins its parent's group. A group's quantized output (nndct_graph/nndctgraph_holder.py
  `quant_output`) is its last member, or the concat that member solely feeds; flatten/reshape hand it back to
  the member before them.
- Which outputs are quantized (nndct_shared/quantization/quant_strategy.py `_get_default_quant_config`): the
  group end of every quantizable node, then the group end of every parent of a quantizable node that is not
  input or concat (so an unsupported op feeding a conv gets its output quantized too), provided that end puts
  out a float tensor (a `shape` node's int output is skipped).
- Shape arithmetic. nndct parses a torch.jit trace (pytorch_nndct/parse/trace_helper.py). The tracer emits one
  `aten::size(x, d)` per dimension, in order, where `x.shape` / `x.size()` is read (one where `x.size(d)` is);
  the unused ones are dropped (`_jit_pass_dce` in pytorch_nndct/utils/jit_utils.py `_optimize_graph_19`). Each
  left becomes a `shape` node (parse/op_dispatcher.py `size` -> TorchSize), numbered like any other node;
  NumToTensor/Int are removed (trace_helper.py `_optimize`, `remove_simple_op`) and ListConstruct is packed
  into its consumer (parse/opt_pass.py `pack_ListConstruct_op`), so neither is numbered, while the shape nodes
  become inputs of the consumer. Seen in generated `<Class>.py` files: `x.view(x.size(0), -1)` gives
  `nndct_shape_10` then `nndct_reshape_11`; `F.interpolate(y, size=x.shape[-2:])` gives two shape nodes (dims
  2, 3) at the point of the `.shape` read, then the resize. Sizes of parameters are folded to constants
  (`merge_weight_size_to_constant`), not numbered. A `view` whose output shape equals its input's is removed
  with the shape nodes only it used (opt_pass.py `remove_reduantant_view`).
- Reshape joins the group of its first parent that is not a `shape` node (nndct_shared/quantization/
  commander.py `SoftFuseReshape`); shape nodes count as children of the tensor they read (graph.children).
- Numbering: n is the node's position in the optimized graph when the quantizable module is written
  (pytorch_nndct/qproc/utils.py `prepare_quantizable_module`: parse_module -> QuantOptimizer (BN folding,
  dropout removal) -> script writer, whose `_gen_module_name` sets node.idx); removed nodes leave no gap.
"""

import operator
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import BackendError

LEAKY_SLOPE = 26.0 / 256.0  # 0.1015625: the DPU's leaky relu (pytorch_nndct/nn/modules/leaky_relu.py)

CONV_OPS = ("conv2d", "depthwise_conv2d", "conv_transpose_2d", "depthwise_conv_transpose_2d")
PARAM_OPS = CONV_OPS + ("dense",)
# NndctGraphHolder.QUANTIZABLE_OPS restricted to the ops emulated here
QUANTIZABLE = frozenset(CONV_OPS + ("dense", "batch_norm", "input", "maxpool", "avgpool", "adaptive_avg_pool2d",
                                    "concat", "elemwise_add", "resize"))
# NndctGraphHolder.MULTIPLE_OUTPUTS_OPS restricted likewise: they pass the group's quantization on
SHAPE_OPS = frozenset(("flatten", "reshape"))
SOFT_FUSED = ("relu", "leaky_relu", "relu6", "flatten")


class Node:
    """One op of the BN-folded graph."""

    def __init__(self, idx: int, op: str, fx_node: fx.Node) -> None:
        self.idx = idx
        self.op = op
        self.name = "nndct_{}_{}".format(op, idx)
        self.fx_node = fx_node
        self.parents: List["Node"] = []
        self.children: List["Node"] = []
        self.module: Optional[nn.Module] = None
        self.module_path = ""
        self.weight: Optional[torch.Tensor] = None  # float parameters after BN folding (and equalization)
        self.bias: Optional[torch.Tensor] = None
        self.weight_name = ""
        self.bias_name = ""
        self.supported = True
        self.attrs: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return self.name


class Graph:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: List[Node] = []
        self.steps: List[fx.Node] = []  # fx nodes in execution order
        self.node_of: Dict[fx.Node, Node] = {}  # fx node -> the op that computes it
        self.alias: Dict[fx.Node, fx.Node] = {}  # fx node -> fx node whose value it is (folded BN, dropout)
        self.output: Optional[fx.Node] = None
        self.modules: Dict[str, nn.Module] = {}
        self.groups: Dict[str, List[Node]] = {}
        self.quant_out: Dict[str, Node] = {}
        self.output_keys: List[str] = []  # names whose outputs are quantized, in nndct's config order
        self.unsupported: List[str] = []

    def full(self, name: str) -> str:
        return "{}::{}".format(self.prefix, name)

    def resolve(self, n: fx.Node) -> fx.Node:
        while n in self.alias:
            n = self.alias[n]
        return n


def _op_of_module(m: nn.Module, relu6_as_relu: bool) -> Optional[str]:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.padding_mode != "zeros":
        return None
    if isinstance(m, nn.Conv2d):
        return "depthwise_conv2d" if m.groups > 1 and m.groups == m.in_channels else "conv2d"
    if isinstance(m, nn.ConvTranspose2d):
        return "depthwise_conv_transpose_2d" if m.groups > 1 and m.groups == m.in_channels else "conv_transpose_2d"
    if isinstance(m, nn.BatchNorm2d):
        return "batch_norm"
    if isinstance(m, nn.Linear):
        return "dense"
    if isinstance(m, nn.ReLU6):  # before Hardtanh: ReLU6 is one
        return "relu" if relu6_as_relu else "relu6"
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu"
    if isinstance(m, nn.MaxPool2d):
        return "maxpool"
    if isinstance(m, nn.AvgPool2d):
        return "avgpool"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "adaptive_avg_pool2d"
    if isinstance(m, nn.Upsample):
        return "resize"
    if isinstance(m, nn.Flatten):
        return "flatten"
    return None


_FUNCTIONS: Dict[Any, str] = {
    torch.cat: "concat", operator.add: "elemwise_add", torch.add: "elemwise_add", operator.iadd: "elemwise_add",
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.leaky_relu: "leaky_relu",
    F.max_pool2d: "maxpool", F.avg_pool2d: "avgpool", F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.interpolate: "resize", torch.flatten: "flatten", torch.reshape: "reshape",
}
if hasattr(torch, "concat"):
    _FUNCTIONS[torch.concat] = "concat"
_METHODS = {"add": "elemwise_add", "add_": "elemwise_add", "relu": "relu", "relu_": "relu",
            "flatten": "flatten", "view": "reshape", "reshape": "reshape"}
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity)
_IDENTITY_FUNCTIONS = (F.dropout, F.dropout2d, torch.Tensor.contiguous)


def _tensor_args(n: fx.Node, is_tensor: Callable[[fx.Node], bool]) -> List[fx.Node]:
    found: List[fx.Node] = []
    fx.node.map_arg((n.args, n.kwargs), lambda a: found.append(a) if is_tensor(a) else None)
    return found


SizeRef = List[Tuple[fx.Node, int]]  # (the fx node that reads the sizes, dimension)


def _size_refs(nodes: List[fx.Node], is_tensor: Callable[[fx.Node], bool]) -> Dict[fx.Node, SizeRef]:
    """fx nodes whose value is (part of) a tensor's sizes, each mapped to the aten::size reads it stands for."""
    refs: Dict[fx.Node, SizeRef] = {}
    for n in nodes:
        src = n.args[0] if n.args else None
        if not isinstance(src, fx.Node):
            continue
        if n.op == "call_function" and n.target is operator.getitem:
            if src in refs and isinstance(n.args[1], (int, slice)):
                picked = refs[src][n.args[1]]
                refs[n] = picked if isinstance(picked, list) else [picked]
            continue
        if not is_tensor(src) or src.op == "get_attr":
            continue  # a parameter's size is folded to a constant (trace_helper.py merge_weight_size_to_constant)
        if n.op == "call_function" and n.target is getattr and n.args[1:2] == ("shape",) or \
                n.op == "call_method" and n.target == "size" and len(n.args) == 1 and "dim" not in n.kwargs:
            refs[n] = [(n, d) for d in range(len(src.meta["tensor_meta"].shape))]
        elif n.op == "call_method" and n.target == "size":
            dim = n.args[1] if len(n.args) > 1 else n.kwargs["dim"]
            if isinstance(dim, int):
                refs[n] = [(n, dim)]
    return refs


def capture(model: nn.Module, sample: torch.Tensor, *, relu6_as_relu: bool) -> Graph:
    """Trace model, fold BatchNorm, number and group the nodes the way nndct does."""
    prefix = type(model).__name__
    try:
        traced = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported with its cause
        raise BackendError(
            "the portable quantizer could not capture {} with torch.fx: {}: {}. It needs a forward() without "
            "data-dependent control flow (if/for on tensor values) and without untraceable calls; rewrite that "
            "part of the model or use --quantizer vai".format(prefix, type(e).__name__, e)) from e
    modules = dict(traced.named_modules())
    # which fx nodes carry tensors: one shape-propagation run on a sample
    from torch.fx.passes.shape_prop import ShapeProp
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(sample)
    except Exception as e:  # noqa: BLE001
        raise BackendError("the model failed on a sample of shape {}: {}: {}".format(
            tuple(sample.shape), type(e).__name__, e)) from e

    def is_tensor(a: fx.Node) -> bool:
        return isinstance(a, fx.Node) and "tensor_meta" in a.meta and hasattr(a.meta["tensor_meta"], "shape")

    g = Graph(prefix)
    g.modules = modules
    users: Dict[fx.Node, int] = {}
    for n in traced.graph.nodes:
        for a in _tensor_args(n, is_tensor):
            users[a] = users.get(a, 0) + 1

    nodes = list(traced.graph.nodes)
    # a view to the shape it already has is dropped (parse/opt_pass.py remove_reduantant_view)
    same_view = {n for n in nodes if n.op == "call_method" and n.target == "view" and is_tensor(n) and
                 is_tensor(n.args[0]) and n.meta["tensor_meta"].shape == n.args[0].meta["tensor_meta"].shape and
                 n.meta["tensor_meta"].dtype == n.args[0].meta["tensor_meta"].dtype}
    refs = _size_refs(nodes, is_tensor)
    # which aten::size reads survive dead-code elimination: those some kept op depends on
    live: Set[fx.Node] = set()
    used: Set[Tuple[fx.Node, int]] = set()
    for n in reversed(nodes):
        if n.op == "output" or (is_tensor(n) and n not in same_view) or n in live:
            if n not in refs:  # a consumer; a size read or a pick from one passes its dims on instead
                fx.node.map_arg((n.args, n.kwargs), lambda a: used.update(refs.get(a, ())))
            fx.node.map_arg((n.args, n.kwargs), lambda a: live.add(a) if not is_tensor(a) else None)
    shape_of: Dict[Tuple[fx.Node, int], Node] = {}

    idx = 0
    placeholders = 0
    for n in nodes:
        g.steps.append(n)
        if n.op == "output":
            out = n.args[0]
            if not is_tensor(out):
                raise BackendError("the portable quantizer supports models that return one tensor; {} returns {}"
                                   .format(prefix, type(out).__name__))
            g.output = out
            continue
        if n.op == "placeholder":
            placeholders += 1
            if placeholders > 1:
                raise BackendError("the portable quantizer supports models with one input; {}.forward takes "
                                   "more ({})".format(prefix, n.target))
            op: Optional[str] = "input"
        elif n.op == "get_attr" or not is_tensor(n):
            # constants and shape arithmetic are evaluated as they are; each aten::size read nndct keeps is a
            # `shape` node of its own, numbered here, in dimension order (see the module docstring)
            for d in sorted({d for (src, d) in refs.get(n, ()) if src is n and (n, d) in used}):
                shape = Node(idx, "shape", n)
                idx += 1
                tensor = g.resolve(n.args[0])
                shape.parents = [g.node_of[tensor]] if tensor in g.node_of else []
                shape.attrs["dim"] = d
                shape_of[(n, d)] = shape
                g.nodes.append(shape)
            continue
        elif n in same_view:
            g.alias[n] = n.args[0]
            continue
        elif n.op == "call_module":
            m = modules[n.target]
            if isinstance(m, _IDENTITY_MODULES):
                g.alias[n] = _tensor_args(n, is_tensor)[0]
                continue
            op = _op_of_module(m, relu6_as_relu)
            if op in PARAM_OPS + ("batch_norm",) and (len(n.args) != 1 or n.kwargs):
                op = None  # e.g. ConvTranspose2d(x, output_size=...): run the module as it is, in float
            if op == "batch_norm":
                src = g.resolve(_tensor_args(n, is_tensor)[0])
                conv = g.node_of.get(src)
                if conv is not None and conv.op in CONV_OPS and users.get(src, 0) == 1 and m.track_running_stats:
                    _fold_bn(conv, m)
                    g.alias[n] = src
                    continue
        else:
            target = n.target
            if n.op == "call_function" and target in _IDENTITY_FUNCTIONS or \
                    n.op == "call_method" and target == "contiguous":
                g.alias[n] = _tensor_args(n, is_tensor)[0]
                continue
            op = _FUNCTIONS.get(target) if n.op == "call_function" else _METHODS.get(target)
            if op == "elemwise_add" and len(_tensor_args(n, is_tensor)) != 2:
                op = None  # a tensor plus a constant: not the DPU's elementwise add
        node = Node(idx, op or _fallback_name(n, modules), n)
        node.supported = op is not None
        idx += 1
        if n.op == "call_module":
            node.module = modules[n.target]
            node.module_path = n.target
        # inputs in argument order, the shape nodes of a size argument included (nndct's in_tensors)
        for a in _tensor_args(n, lambda a: True):
            if is_tensor(a):
                if g.resolve(a) in g.node_of:
                    node.parents.append(g.node_of[g.resolve(a)])
            else:
                node.parents.extend(shape_of[r] for r in refs.get(a, ()) if r in shape_of)
        g.node_of[n] = node
        g.nodes.append(node)
        if not node.supported:
            g.unsupported.append("{} ({})".format(node.name, _describe(n)))
    if g.output is None:
        raise BackendError("{}.forward returns nothing".format(prefix))
    for node in g.nodes:
        for p in node.parents:
            if node not in p.children:
                p.children.append(node)
    _init_params(g)
    _group(g)
    return g


def _describe(n: fx.Node) -> str:
    if n.op == "call_module":
        return "module {} ({})".format(n.target, n.graph.owning_module.get_submodule(n.target).__class__.__name__)
    name = getattr(n.target, "__name__", str(n.target))
    return "{} {}".format("method" if n.op == "call_method" else "function", name)


def _fallback_name(n: fx.Node, modules: Dict[str, nn.Module]) -> str:
    if n.op == "call_module":
        return type(modules[n.target]).__name__.lower()
    return str(getattr(n.target, "__name__", n.target)).strip("_").lower()


def _fold_bn(conv: Node, bn: nn.BatchNorm2d) -> None:
    m = conv.module
    w = m.weight.detach().clone() if conv.weight is None else conv.weight
    b = (m.bias.detach().clone() if m.bias is not None else None) if conv.weight is None else conv.bias
    var = bn.running_var.detach()
    mean = bn.running_mean.detach()
    gamma = bn.weight.detach() if bn.affine else torch.ones_like(var)
    beta = bn.bias.detach() if bn.affine else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    offset = beta - mean * scale
    if isinstance(m, nn.ConvTranspose2d):
        # torch keeps [in, out/groups, kh, kw]; the output channel of column j in group k is k * out/groups + j
        gsz = w.shape[1]
        s = scale.view(m.groups, 1, gsz, 1, 1)
        w = (w.view(m.groups, -1, gsz, *w.shape[2:]) * s).view_as(w)
    else:
        w = w * scale.view(-1, 1, 1, 1)
    b = offset if b is None else b * scale + offset
    conv.weight, conv.bias = w, b
    conv.attrs["bn_folded"] = True


def _init_params(g: Graph) -> None:
    seen = set()
    for node in g.nodes:
        m = node.module
        if node.op not in PARAM_OPS + ("batch_norm",) or m is None:
            continue
        if node.op == "batch_norm":
            # an unfolded BatchNorm is computed as x * scale + offset with both quantized
            # (nndct_shared/optimization/commander.py ConvertBNParams)
            var, mean = m.running_var.detach(), m.running_mean.detach()
            gamma = m.weight.detach() if m.affine else torch.ones_like(var)
            beta = m.bias.detach() if m.affine else torch.zeros_like(var)
            node.weight = gamma / torch.sqrt(var + m.eps)
            node.bias = beta - mean * node.weight
        elif node.weight is None:
            node.weight = m.weight.detach().clone()
            node.bias = m.bias.detach().clone() if m.bias is not None else None
        node.weight_name = _unique(g.full(node.module_path + ".weight"), node, seen)
        if node.bias is not None:
            node.bias_name = _unique(g.full(node.module_path + ".bias"), node, seen)


def _unique(name: str, node: Node, seen: set) -> str:
    # a module called twice gets `<param>.<node index>` the second time
    # (nndct_shared/optimization/commander.py DecoupleSharedParamsInConv)
    if name in seen:
        name = "{}.{}".format(name, node.idx)
    seen.add(name)
    return name


def _group(g: Graph) -> None:
    groups: Dict[str, List[Node]] = {n.name: [n] for n in g.nodes}

    def glue(start: Node, n: Node) -> None:
        members = groups[start.name]
        for m in groups[n.name]:
            if m not in members:
                members.append(m)
        for m in members:
            groups[m.name] = members

    changed = True
    while changed:
        changed = False
        for n in g.nodes:
            if groups[n.name][0] is not n:
                continue
            if n.op in SOFT_FUSED and len(n.parents) == 1 and len(n.parents[0].children) == 1:
                glue(groups[n.parents[0].name][0], n)
                changed = True
            elif n.op == "reshape" and any(p.op != "shape" for p in n.parents):
                # commander.py SoftFuseReshape: a shape node is not the parent a reshape joins
                glue(groups[next(p for p in n.parents if p.op != "shape").name][0], n)
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
        if n.op in QUANTIZABLE and g.quant_out[n.name].name not in keys:
            keys.append(g.quant_out[n.name].name)
    for n in g.nodes:
        if n.op in QUANTIZABLE and n.op not in ("input", "concat"):
            for p in n.parents:
                end = g.quant_out[p.name].name
                if end not in keys and g.quant_out[p.name].op != "shape":  # int output: not quantized
                    keys.append(end)
    g.output_keys = keys
