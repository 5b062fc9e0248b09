"""The second stage: nndct's graph of the traced model, BatchNorm folded, nodes named and numbered as nndct does.

Inspection (container_payload/inspector) reads it as it is; quantization groups its nodes
(container_payload/backends/portable/groups.py). What nndct does and where it says so (Xilinx/Vitis-AI
src/vai_quantizer/vai_q_pytorch):
- BatchNorm after a conv or conv-transpose is folded into it, w' = w * s, b' = b * s + beta - mean * s with
  s = gamma / sqrt(var + eps) (nndct_shared/optimization/fuse_conv_bn.py); a conv without bias gains
  `<module>.bias`. A BatchNorm after a concat of convs (read by nothing else) is folded into each of them, with
  its channels' slice of s (commander.py FuseBnToConv's [conv, concat, bn] patterns; timm's MixedConv2d).
  Dropout (aten::dropout, and aten::feature_dropout, which the dispatcher maps to it) is removed
  (nndct_shared/optimization/optimizer.py), after the folding: a BatchNorm reading a dropout does not fold.
- Node names are `nndct_<op>_<n>`, n the index in the BN-folded graph in execution order (DESIGN.md section 9,
  seen on real runs); op names are NNDCT_OP's values (nndct_shared/base/key_names.py).
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
- Numbering: n is the node's position in the optimized graph when the quantizable module is written
  (pytorch_nndct/qproc/utils.py `prepare_quantizable_module`: parse_module -> QuantOptimizer (BN folding,
  dropout removal) -> script writer, whose `_gen_module_name` sets node.idx); removed nodes leave no gap.
"""
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Set

import torch
from torch import nn

from container_payload.backends import BackendError

from .trace import batchnorms_made_affine, relu6_modules_as_relu, state_dict, trace, user_frame

LEAKY_SLOPE = 26.0 / 256.0  # 0.1015625: the DPU's leaky relu (pytorch_nndct/nn/modules/leaky_relu.py)

CONV_OPS = ("conv2d", "depthwise_conv2d", "conv_transpose_2d", "depthwise_conv_transpose_2d")
# nn.Conv1d (timm's ECA gate): quantized like a conv, but no BatchNorm folding and no equalization for it
# (commander.py's FuseBnToConv patterns and _CLE_TYPES are 2d/3d only)
CONV1D_OPS = ("conv1d",)
# nn.Conv3d (timm's LambdaLayer position lambda): nndct_conv3d, weight and bias quantized, bias corrected per channel
# (pytorch_nndct/nn/modules/conv3d.py), a BatchNorm folded into it and equalized with its neighbours as 2-d convs
# are (commander.py's patterns and _CLE_TYPES); depthwise and transposed 3-d convs are not emulated (float ops)
CONV3D_OPS = ("conv3d",)
PARAM_OPS = CONV_OPS + CONV1D_OPS + CONV3D_OPS + ("dense",)

# aten op -> NNDCT_OP type without its `nndct_` prefix (parse/op_dispatcher.py, nndct_shared/base/key_names.py);
# in-place variants (`relu_`) map like their functional form. Ops that need a look at their arguments (convs,
# add/mul with a scalar, hardtanh, mean's schema) are decided in _op_name.
_ATEN = {
    "batch_norm": "batch_norm", "instance_norm": "instance_norm", "group_norm": "group_norm",
    "layer_norm": "layer_norm", "max_pool2d": "maxpool", "max_pool2d_with_indices": "maxpool",
    "max_pool1d": "maxpool1d", "avg_pool2d": "avgpool", "adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "linear": "dense", "addmm": "addmm", "flatten": "flatten", "relu": "relu", "leaky_relu": "leaky_relu",
    "gelu": "GELU", "mish": "mish", "prelu": "prelu", "sqrt": "sqrt", "size": "shape", "view": "reshape",
    "reshape": "reshape", "cat": "concat", "relu6": "relu6", "transpose": "transpose", "contiguous": "contiguous",
    "chunk": "chunk", "ConstantChunk": "chunk", "upsample_bilinear2d": "resize", "upsample_nearest2d": "resize",
    "to": "cast",
    "floor": "floor", "permute": "permute", "floor_divide": "floor_divide", "softmax": "softmax",
    "sigmoid": "sigmoid", "hardswish": "hswish", "hardsigmoid": "hsigmoid", "slice": "strided_slice",
    "sub": "elementwise_sub", "rsub": "rsub", "exp": "elemwise_exp", "detach": "detach", "select": "select",
    "repeat": "repeat", "copy": "copy_", "expand": "expand", "unsqueeze": "unsqueeze", "squeeze": "squeeze",
    "constant_pad_nd": "pad", "replication_pad2d": "pad", "pad": "pad_nd", "matmul": "matmul", "clamp": "clamp",
    "clamp_min": "clamp", "tanh": "tanh", "norm": "normalize", "expand_as": "expand_as", "max": "max",
    "min": "min", "stack": "stack", "bmm": "matmul",  # parse/op_dispatcher.py bmm -> TorchMatmul
    "pixel_shuffle": "pixel_shuffle",
    "pixel_unshuffle": "pixel_unshuffle", "mm": "matmul", "neg": "neg", "sum": "sum", "ceil": "ceil",
    "log_softmax": "log_softmax", "zeros": "zeros", "grid_sampler": "grid_sample", "index": "index",
    "embedding": "embedding", "arange": "arange", "argmax": "argmax_dim",
    # parse/op_dispatcher.py new_zeros -> zeros (torchvision's Swin attention mask), eq -> NNDCT_OP.EQUAL
    "new_zeros": "zeros", "eq": "equal",
}
# removed before numbering: NumToTensor/Int/ScalarImplicit (trace_helper.py remove_simple_op), dropout
# (nndct_shared/optimization/optimizer.py)
_REMOVED = frozenset(("Int", "ScalarImplicit", "IntImplicit"))
# (elementwise ops whose in-place form is run out of place: the tracer hands later uses the op's output)
# in-place forms the dispatcher has a method for (or maps, add_ -> add); any other `op_` is an op it does not
# know: Dropout2d(inplace=True) gives `aten_feature_dropout__N` while Dropout2d() is removed (seen on real runs)
_DISPATCHED_INPLACE = frozenset(("relu_", "leaky_relu_", "mish_", "sqrt_", "relu6_", "hardtanh_", "hardswish_",
                                 "hardsigmoid_", "dropout_", "add_"))
# ops nndct names but keeps as float "custom" ops (its log: "recognize new op `nndct_stack` as a float operator")
CUSTOM_NNDCT = frozenset(("stack",))
# binary ops whose plain-number operand nndct turns into a const tensor node, numbered first
# (parse/trace_helper.py _optimize -> opt_pass.py transform_const_scalar_to_const_tensor)
_SCALAR_TO_CONST = frozenset(("add", "sub", "mul", "div", "rsub", "remainder"))
_DTYPES = {"Float": torch.float32, "Double": torch.float64, "Half": torch.float16, "Long": torch.int64,
           "Int": torch.int32, "Bool": torch.bool}
_INPLACE_OK = frozenset(("relu_", "leaky_relu_", "hardtanh_", "hardswish_", "hardsigmoid_", "sigmoid_", "tanh_",
                         "add_", "mul_", "sub_", "div_", "clamp_", "clamp_min_", "relu6_", "dropout_",
                         "feature_dropout_", "elu_", "silu_", "mish_", "sqrt_", "exp_", "neg_"))


# where the weight and bias are among an affine norm's arguments (aten::group_norm, layer_norm, instance_norm)
NORM_SLOTS = {"group_norm": (2, 3), "layer_norm": (2, 3), "instance_norm": (1, 2)}


class Step:
    """One op of the traced graph to run: fn(*values of ins) -> the value(s) of outs."""

    __slots__ = ("fn", "ins", "outs", "node", "kind")

    def __init__(self, fn: Callable, ins: List[int], outs: List[int], kind: str) -> None:
        self.fn = fn
        self.ins = ins
        self.outs = outs
        self.node: Optional["Node"] = None
        self.kind = kind


def node_name(op: str, idx: int) -> str:
    """`nndct_conv2d_3` for NNDCT_OP types, `aten_feature_dropout__7` for ops nndct keeps under their aten name."""
    return "{}_{}".format(op.replace("::", "_"), idx) if "::" in op else "nndct_{}_{}".format(op, idx)


class Node:
    """One op of the BN-folded graph, as nndct numbers it."""

    def __init__(self, idx: int, op: str, step: Optional[Step]) -> None:
        self.idx = idx
        self.op = op  # NNDCT_OP type without `nndct_`, or an aten schema name (`aten::feature_dropout`)
        self.name = node_name(op, idx)
        self.step = step
        self.parents: List["Node"] = []
        self.children: List["Node"] = []
        self.module_path = ""  # the parameters' prefix in the state_dict
        self.weight: Optional[torch.Tensor] = None  # float parameters after BN folding (and equalization)
        self.bias: Optional[torch.Tensor] = None
        self.weight_name = ""
        self.bias_name = ""
        self.custom = "::" in op or op in CUSTOM_NNDCT  # nndct's float ops: never fused into a group
        self.float_out = True  # puts out a float tensor (shape arithmetic does not)
        self.attrs: Dict[str, Any] = {}
        # nndct's name of the node in its graph (`ResNet::ResNet/Conv2d[conv1]/ret.3`): the scope and debug name
        # of its first output as nndct's trace gives them; nndct's own only when captured with nndct_names
        self.nndct_name = ""
        self.source: Optional[str] = None  # `path:line` of the user's code that made the op (trace.user_frame)

    def __repr__(self) -> str:
        return self.name


class Graph:
    """nndct's numbered nodes, and the steps that compute them: the traced ops in order, each reading and
    writing value ids (constants and parameters preloaded in consts, the sample at input_id)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: List[Node] = []
        self.steps: List[Step] = []
        self.consts: Dict[int, Any] = {}  # value id -> constant (parameters included)
        self.input_id = -1
        self.output_id = -1
        self.groups: Dict[str, List[Node]] = {}
        self.quant_out: Dict[str, Node] = {}
        self.output_keys: List[str] = []  # names whose outputs are quantized, in nndct's config order
        self.unsupported: List[str] = []  # ops run in float, for the log
        self.notes: List[str] = []  # what capture changed the way nndct changes it, for the log
        # parameters a quantizable op without parameters of its own reads (ViT's pos_embed in an add): nndct
        # configures them (torch_qstrategy.py: every param of a quantizable node) and never quantizes them
        self.null_params: List[str] = []
        # the traced shape of every value (None where it is not a tensor of known shape) and, for a value that
        # holds a list (chunk, unbind), its kind: the deployable graph's stage reads them (inspector/deploy.py)
        self.shapes: Dict[int, Optional[List[int]]] = {}
        self.list_values: Set[int] = set()

    def full(self, name: str) -> str:
        return "{}::{}".format(self.prefix, name)


def _schema_fn(n) -> Callable:
    """The operator a traced node calls, resolved once to its overload."""
    kind = n.kind()
    ns, _, name = kind.partition("::")
    if ns == "aten" and name in _INPLACE_OK:
        name = name[:-1]
    packet = getattr(getattr(torch.ops, ns), name)
    try:
        schema = n.schema()
    except Exception:  # noqa: BLE001 - no schema: let the packet pick the overload
        return packet
    head = schema.split("(", 1)[0]
    overload = head.split(".", 1)[1] if "." in head else "default"
    op = getattr(packet, overload, packet)
    try:
        args = torch._C.parse_schema(schema).arguments
    except Exception:  # noqa: BLE001 - an unparsable schema: positional it is
        return op
    kw = [a.name for a in args if a.kwarg_only]
    if not kw:
        return op
    npos = len(args) - len(kw)

    def call(*values):
        return op(*values[:npos], **dict(zip(kw, values[npos:])))
    return call


def _pair(v) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _is_float_tensor(v) -> bool:
    t = v.type()
    if t.kind() != "TensorType":
        return False
    st = t.scalarType()
    return st is None or st in ("Float", "Double", "Half", "BFloat16")


def capture(model: nn.Module, sample: torch.Tensor, *, relu6_as_relu: bool, nndct_names: bool = False,
            check_forward: bool = True) -> Graph:
    """Trace model, fold BatchNorm, name and number the nodes the way nndct does (groups: portable/groups.py).
    nndct_names: trace the way nndct does, so that each node's nndct_name is the name nndct's graph gives it (the
    same nodes either way; inspection reports these names)."""
    prefix = type(model).__name__
    with relu6_modules_as_relu(model, relu6_as_relu), batchnorms_made_affine(model) as made_affine:
        graph = trace(model, sample, nndct_names, check_forward)
        for _, old, new in made_affine:
            # the tracing pass, in training mode, moved the stand-in's running statistics toward the sample's;
            # nndct keeps them so moved, which makes its result depend on the input it was traced with (hostctl's
            # vai backend traces with random data). The model's own statistics are used here.
            with torch.no_grad():
                new.running_mean.copy_(old.running_mean)
                new.running_var.copy_(old.running_var)
        params = state_dict(model)
    g = Graph(prefix)
    for path, _, _ in made_affine:
        g.notes.append("BatchNorm {} has affine=False: as vai_q_pytorch does, it is quantized as an affine "
                       "BatchNorm with weight 1 and bias 0 (vai_q_pytorch also moves its running statistics "
                       "toward the input it traces with; the portable quantizer keeps yours)".format(path))
    inputs = list(graph.inputs())
    n_user = len(inputs) - len(params)
    if n_user != 1:
        raise BackendError("the portable quantizer supports models with one input; {}.forward takes {}".format(
            prefix, n_user))
    g.input_id = inputs[0].unique()
    _record_shapes(g, graph)
    param_of: Dict[int, str] = {}
    for v, (key, t) in zip(inputs[1:], params.items()):
        g.consts[v.unique()] = t
        param_of[v.unique()] = key

    alias: Dict[int, int] = {}
    producer: Dict[int, List[Node]] = {}  # value id -> the numbered nodes it stands for (lists and ints pass on)
    consumers: Dict[int, int] = {}
    for n in graph.nodes():
        for v in n.inputs():
            consumers[v.unique()] = consumers.get(v.unique(), 0) + 1
    late_bns = _late_batchnorms(graph)
    for v in graph.outputs():
        consumers[v.unique()] = consumers.get(v.unique(), 0) + 1

    def rid(v) -> int:
        u = v.unique()
        while u in alias:
            u = alias[u]
        return u

    # tensor constants, and plain-number operands of binary ops, are `const` nodes numbered before the input
    # (seen on real runs: `c // 2` gives nndct_const_0, nndct_input_1)
    scalar_consts: List[Node] = []
    tensor_consts: List[Node] = []
    const_of: Dict[int, int] = {}
    idx = 0
    removed = 0  # nodes of nndct's parsed graph its optimizer removes later (dropout, a folded BatchNorm)
    inp = Node(idx, "input", None)
    inp.nndct_name = "{}::input_0".format(prefix)
    g.nodes.append(inp)
    producer[g.input_id] = [inp]
    idx += 1

    for n in graph.nodes():
        kind = n.kind()
        ins = list(n.inputs())
        outs = list(n.outputs())
        ns, _, name = kind.partition("::")
        base = name[:-1] if name in _DISPATCHED_INPLACE else name
        if kind == "prim::Constant":
            out = n.output()
            g.consts[out.unique()] = out.toIValue() if out.type().kind() != "NoneType" else None
            continue
        if ns == "aten" and base in ("dropout", "feature_dropout", "alias"):
            alias[outs[0].unique()] = rid(ins[0])
            if base != "alias":
                removed += 1
            continue
        if kind == "prim::NumToTensor" or ns == "aten" and base in _REMOVED:
            if base == "Int" and _float_int_into_pad(n) and _PAD_NOTE not in g.notes:
                g.notes.append(_PAD_NOTE)
            step = Step(_schema_fn(n), [rid(v) for v in ins], [outs[0].unique()], kind)
            g.steps.append(step)
            producer[outs[0].unique()] = producer.get(rid(ins[0]), [])
            continue
        if ns == "prim" and base != "ConstantChunk":
            if base in ("ListConstruct", "TupleConstruct"):
                fn = _list if base == "ListConstruct" else _tuple
            elif base in ("ListUnpack", "TupleUnpack"):
                fn = _unpack
                made = producer.get(rid(ins[0]), [])
                if len(made) == 1 and made[0].step is not None and made[0].step.outs == [rid(ins[0])] and outs:
                    # nndct's node puts out the unpacked values (unbind's q, k, v) and is named after the first
                    made[0].nndct_name = _nndct_name(prefix, outs[0])
            elif base == "TupleIndex":
                fn = _index
            else:
                fn = _schema_fn(n)
            list_ids = [rid(v) for v in ins]
            if base in ("ListConstruct", "TupleConstruct"):
                # a tensor constant packed into a list (timm's non-persistent `attention_bias_idxs` buffer in
                # `x[:, idxs]` -> aten::index(x, [None, const])) is a const node too: nndct makes one of every
                # prim::Constant that is not a plain value, wherever it is used (trace_helper.py
                # _create_attrs_value), numbered with the other tensor constants
                for i, v in enumerate(ins):
                    if v.node().kind() == "prim::Constant" and v.type().kind() == "TensorType" and \
                            isinstance(g.consts.get(list_ids[i]), torch.Tensor):
                        if list_ids[i] not in const_of:
                            const_of[list_ids[i]] = _const_node(g, g.consts[list_ids[i]], tensor_consts, producer)
                            tensor_consts[-1].nndct_name = _nndct_name(prefix, v)
                        list_ids[i] = const_of[list_ids[i]]
            step = Step(fn, list_ids, [o.unique() for o in outs], kind)
            g.steps.append(step)
            packed = [p for v in list_ids for p in producer.get(v, [])]
            for o in outs:
                producer[o.unique()] = packed
            continue
        # an aten op (or prim::ConstantChunk): a node of nndct's graph
        arg_ids = [rid(v) for v in ins]
        if base == "size" and arg_ids and arg_ids[0] in param_of:
            # a parameter's size is a constant (trace_helper.py merge_weight_size_to_constant)
            g.consts[outs[0].unique()] = g.consts[arg_ids[0]].size(int(g.consts[arg_ids[1]]))
            continue
        if base == "view" and _same_shape(ins[0], outs[0]):
            # a view to the shape it already has (opt_pass.py remove_reduantant_view), judged on the traced shapes
            alias[outs[0].unique()] = arg_ids[0]
            continue
        chain = producer.get(arg_ids[0], []) if base == "slice" else []
        if len(chain) == 1 and chain[0].attrs.get("slice_chain") == arg_ids[0] and \
                consumers.get(ins[0].unique(), 0) == 1:
            # a slice of a slice joins it: one strided_slice node per chain (opt_pass.py slice_to_strided_slice)
            head = chain[0]
            g.steps.append(Step(_schema_fn(n), arg_ids, [outs[0].unique()], kind))
            for a in arg_ids[1:]:
                for p in producer.get(a, []):
                    if p not in head.parents:
                        head.parents.append(p)
            producer[outs[0].unique()] = [head]
            head.attrs["slice_chain"] = outs[0].unique()
            continue
        if base == "batch_norm" and n not in late_bns and not _bn_computed_affine(ins, arg_ids, param_of) and \
                _fold_bn_into(g, producer.get(arg_ids[0], []), arg_ids, consumers, ins, param_of):
            alias[outs[0].unique()] = arg_ids[0]
            removed += 1
            continue
        op = _op_name(n, base, ins, arg_ids, g, param_of)
        fn = _chunk_fn(n.i("chunks"), n.i("dim")) if base == "ConstantChunk" else _schema_fn(n)
        for i, v in enumerate(ins):
            if v.node().kind() != "prim::Constant" or not v.uses():
                continue
            vk = v.type().kind()
            value = g.consts.get(arg_ids[i])
            if i == 1 and base in _SCALAR_TO_CONST and vk in ("IntType", "FloatType") and \
                    ins[0].type().kind() == "TensorType":
                dtype = _DTYPES.get(ins[0].type().scalarType() or "Float", torch.float32)
                arg_ids[1] = _const_node(g, torch.tensor(value, dtype=dtype), scalar_consts, producer)
                scalar_consts[-1].attrs["made_for"] = (base, n)
                # (opt_pass.py transform_const_scalar_to_const_tensor names it after the number's value alone)
                scalar_consts[-1].nndct_name = "{}::{}".format(prefix, _recovered(v.debugName()))
                fn = _BINARY[base]
            elif vk == "TensorType" and value is not None:
                if arg_ids[i] not in const_of:
                    # (a wrapped number comes back as a Python scalar)
                    t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                    const_of[arg_ids[i]] = _const_node(g, t, tensor_consts, producer)
                    tensor_consts[-1].nndct_name = _nndct_name(prefix, v)
                arg_ids[i] = const_of[arg_ids[i]]
        step = Step(fn, arg_ids, [o.unique() for o in outs], kind)
        node = Node(idx, op, step)
        node.source = user_frame(n)
        if outs:
            node.nndct_name = _nndct_name(prefix, outs[0])
        idx += 1
        step.node = node
        node.attrs["removed_before"] = removed
        node.float_out = len(outs) == 1 and _is_float_tensor(outs[0])
        if base == "unbind" and len(outs) == 1 and outs[0].type().kind() == "ListType":
            # nndct keeps unbind a float op and quantizes each tensor of its list under the node's one name
            # (quant_info.json: [[8, fp], [8, fp], ...]); the only list-valued op it quantizes so
            node.float_out = True
            node.attrs["list_out"] = True
        elif len(outs) > 1 and "::" in op:
            # a float custom op with several outputs (aten::adaptive_max_pool2d's values and indices) has one
            # quant_info.json entry, for its first output (seen on real runs)
            node.float_out = _is_float_tensor(outs[0])
            node.attrs["first_out"] = True
        elif len(outs) > 1:
            # an op nndct knows with several outputs (max or min along a dim): one entry per output, the float
            # ones quantized each under "name:i", the integer ones null (seen on real runs: [[8, 4], [8, null]])
            node.attrs["out_floats"] = [_is_float_tensor(o) for o in outs]
            node.float_out = any(node.attrs["out_floats"])
        _set_attrs(node, n, base, arg_ids, g, param_of)
        # inputs in argument order, shape nodes of a size argument included (nndct's in_tensors)
        for a in arg_ids:
            for p in producer.get(a, []):
                if p not in node.parents:
                    node.parents.append(p)
        for o in outs:
            producer[o.unique()] = [node]
        if base == "slice":
            node.attrs["slice_chain"] = outs[0].unique()
        # parameters read directly by the op, lists unpacked (parse/parser.py binds each as a free param of the
        # node: a quantizable op's are configured, and stay null unless the op quantizes them, as ViT's pos_embed)
        free = [v for v in ins for v in (v.node().inputs() if v.node().kind() == "prim::ListConstruct" else [v])]
        node.attrs["free_params"] = [param_of[rid(v)] for v in free if rid(v) in param_of]
        if base == "cat" and ins[0].node().kind() == "prim::ListConstruct":
            # each piece's producers and its size along the concat's axis (for BatchNorm folding over a concat)
            dim = g.consts.get(arg_ids[1]) if len(arg_ids) > 1 else 0
            node.attrs["cat_dim"] = dim
            pieces = list(ins[0].node().inputs())
            sizes = [v.type().sizes() if v.type().kind() == "TensorType" else None for v in pieces]
            if isinstance(dim, int) and all(sz is not None and -len(sz) <= dim < len(sz) for sz in sizes):
                node.attrs["cat_parts"] = [(producer.get(rid(v), []), int(sz[dim])) for v, sz in zip(pieces, sizes)]
        g.steps.append(step)
        g.nodes.append(node)
    rets = list(graph.outputs())
    if len(rets) != 1:
        raise BackendError("{}.forward must return one tensor".format(prefix))
    g.output_id = rid(rets[0])
    front = _dfs_order(graph, scalar_consts) + tensor_consts
    g.nodes = front + g.nodes
    g.steps = [c.step for c in front] + g.steps
    _drop_dead(g)
    for node in g.nodes:
        for p in node.parents:
            if node not in p.children:
                p.children.append(node)
    _init_params(g)
    return g


_NNDCT_WRAPPER = re.compile(r"FlattenInOutModelForTrace/(.*)?\[nndct_st_[\w_]+_ed\]")
_NNDCT_ATTR = re.compile(r"nndct_st_[\w_]+_ed\.")


def _recovered(name: str) -> str:
    return _NNDCT_ATTR.sub("", name)


def _nndct_name(prefix: str, value) -> str:
    """nndct's name of the node putting out value: `<graph>::<scope>/<debug name>`, the scope as its trace
    records it with its wrapper's part taken out (parse/torch_graph.py TorchNode.name, jit_utils.py
    get_node_scope_name, rich_in_out_helper.py FlattenInOutModelForTrace.recovery_*)."""
    scope = value.node().scopeName()
    found = _NNDCT_WRAPPER.findall(scope)
    if found:
        scope = _NNDCT_WRAPPER.sub(found[0], scope)
    if scope.startswith("__"):
        scope = scope.split("/")[-1]
    name = "{}/{}".format(scope, value.debugName()) if scope else value.debugName()
    return _recovered("{}::{}".format(prefix, name))


def _record_shapes(g: Graph, graph) -> None:
    """The traced shape of every value (the trace ran on the sample, so tensor types are complete)."""
    values = list(graph.inputs()) + [v for n in graph.nodes() for v in n.outputs()]
    for v in values:
        t = v.type()
        if t.kind() == "TensorType":
            sizes = t.sizes()
            g.shapes[v.unique()] = list(sizes) if sizes is not None else None
        elif t.kind() == "ListType":
            g.list_values.add(v.unique())


_PAD_NOTE = ("vai_q_pytorch fails on this model: a pad width is computed from a float tensor (timm's Conv2dSame / "
             "pad_same: (x / stride).ceil()); nndct drops the aten::Int cast, so F.pad gets 0-dim float tensors and "
             "raises \"pad(): argument 'pad' (position 2) must be tuple of ints, not list\" in calibration. The "
             "portable result has no vai_q_pytorch counterpart (a model built for a fixed input size with "
             "static 'same' padding avoids this)")


def _float_int_into_pad(n) -> bool:
    """aten::Int of a floating tensor whose value reaches an aten::pad / constant_pad_nd through a list."""
    t = n.inputsAt(0).type()
    if t.kind() != "TensorType" or t.scalarType() not in ("Float", "Double", "Half", "BFloat16"):
        return False
    todo, seen = [n.output()], set()
    while todo:
        v = todo.pop()
        for use in v.uses():
            user = use.user
            if user in seen:
                continue
            seen.add(user)
            if user.kind() in ("aten::pad", "aten::constant_pad_nd"):
                return True
            if user.kind() in ("prim::ListConstruct", "prim::TupleConstruct"):
                todo.extend(user.outputs())
    return False


def _dfs_order(graph, consts: List[Node]) -> List[Node]:
    """The plain-number const nodes in nndct's order: opt_pass.py transform_const_scalar_to_const_tensor takes
    the binary ops (add, sub, mul, div, rsub, remainder) pattern by pattern, the patterns in the order
    GraphSearcher's depth-first walk first matched them (node_sets is a dict), each pattern's nodes in the
    walk's order, not in execution order. Seen on a real run of tests/unit/test_portable_ops.py's PadToMultiple:
    const_0..3 feed the four remainders, const_4..5 the two rsubs. The walk is _raw_walk's."""
    if len(consts) < 2:
        return consts
    rank = _raw_walk(graph)
    unreached = len(rank)
    walk = sorted(consts, key=lambda c: rank.get(c.attrs["made_for"][1], unreached))
    # GraphSearcher's node_sets is keyed by pattern in the order the walk first matched each, and a pattern
    # matches every node of its kind, with a plain-number operand or not (torchvision ViT: a tensor mul met
    # first puts the muls' consts before the divs')
    kinds: List[str] = []
    for n in sorted(rank, key=rank.get):
        kind = n.kind().split("::")[-1]
        if kind in _SCALAR_TO_CONST and kind not in kinds:
            kinds.append(kind)
    for c in walk:
        if c.attrs["made_for"][0] not in kinds:
            kinds.append(c.attrs["made_for"][0])
    return sorted(walk, key=lambda c: kinds.index(c.attrs["made_for"][0]))


_SIMPLE_OPS = ("prim::NumToTensor", "aten::Int", "aten::ScalarImplicit")


def _raw_walk(graph) -> Dict[Any, int]:
    """The order in which nndct's GraphSearcher reaches each node of its raw graph when its const pass runs
    (nndct_shared/nndct_graph/graph_searcher.py find_nodes_from_type): depth first from every node without
    inputs from other nodes, in graph order (tensor constants included: torchvision ViT's walk starts at the
    `16` of its patch division), each node's children in its out_nodes order, a visited node not entered
    again. The out_nodes lists are those of torch_graph.py connect_nodes, readers in graph order: every pass of
    pytorch_nndct/parse/trace_helper.py `_optimize` that changes the graph rebuilds them all (TorchBlock
    reconnect_nodes), opt_pass.py remove_simple_op (NumToTensor, Int and ScalarImplicit taken out, their readers
    reading the producer), remove_reduantant_view (a view to the shape it has, likewise) and pack_ListConstruct_op
    (a list with items packed into its readers, which read the
    items) included; an instrumented run shows a size's out_nodes in graph order after each (timm attention:
    `B, N, C = x.shape` read by the qkv reshape, then by three `B * self.num_heads`). An empty list is not packed:
    it stays a node, a root of the walk."""
    # a tensor constant is a node of its own there, ahead of the others (a root: nothing feeds it), a plain
    # number is not; the tracer's aten::alias nodes (this capture's, not nndct's) pass their input on
    everything = list(graph.nodes())
    made_by = {v.unique(): n for n in everything for v in n.outputs()}
    tensor_consts = [n for n in everything if n.kind() == "prim::Constant" and any(
        o.type().kind() == "TensorType" for o in n.outputs())]
    order = tensor_consts + [n for n in everything if n.kind() not in ("prim::Constant", "aten::alias")]
    through: Dict[Any, Any] = {n: made_by[v.unique()] for n in everything if n.kind() == "aten::alias"
                               for v in n.inputs() if v.unique() in made_by}  # (of the input or a param: none)
    for n in order:
        first = next(iter(n.inputs()), None)
        if n.kind() in _SIMPLE_OPS and first is not None and first.unique() in made_by:
            through[n] = made_by[first.unique()]
        elif n.kind() == "aten::view" and first is not None and first.unique() in made_by and \
                _same_shape(first, n.output()):
            # opt_pass.py remove_reduantant_view, which runs before the const pass: its readers read its input
            # (timm's EfficientViT: `feat.view(B, -1, H, W)` of a conv's output, whose size readers then differ)
            through[n] = made_by[first.unique()]
        elif n.kind() in ("prim::ListConstruct", "prim::TupleConstruct") and first is not None:
            through[n] = None  # packed into its readers: they read its items
    nodes = [n for n in order if n not in through]
    outs, ins = _connect(nodes, made_by, through)
    seen: Dict[Any, int] = {}
    for root in nodes:
        if ins[root]:
            continue
        stack = [root]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen[n] = len(seen)
            stack.extend(reversed([c for c in outs[n] if c not in seen]))
    return seen


def _connect(nodes, made_by: Dict[int, Any], through: Dict[Any, Any]):
    """torch_graph.py connect_nodes: each node's readers (out_nodes) in graph order, and its producers. A node
    not among nodes passes its input on (through maps it to its producer); one mapped to None was a list
    packed into its readers, which read its items."""
    kept = set(nodes)
    outs: Dict[Any, list] = {n: [] for n in nodes}
    ins: Dict[Any, list] = {n: [] for n in nodes}

    def flat(v) -> list:
        b = made_by.get(v.unique())
        if b is not None and b in through and through[b] is None:
            return [w for x in b.inputs() for w in flat(x)]
        return [v]

    for a in nodes:
        for v in (w for x in a.inputs() for w in flat(x)):
            b = made_by.get(v.unique())
            while b is not None and b not in kept:
                b = through.get(b)
            if b is not None and b is not a:
                if a not in outs[b]:
                    outs[b].append(a)
                if b not in ins[a]:
                    ins[a].append(b)
    return outs, ins


def _const_node(g: Graph, t: torch.Tensor, into: List[Node], producer: Dict[int, List[Node]]) -> int:
    vid = _CONST_IDS + len(g.consts) + len(into) * 7919
    while vid in g.consts:
        vid += 1
    node = Node(0, "const", Step(lambda: t, [], [vid], "prim::Constant"))
    node.step.node = node
    node.float_out = t.is_floating_point()
    node.attrs["value"] = t
    into.append(node)
    producer[vid] = [node]
    return vid


_BINARY = {  # the binary ops with both operands tensors, for a plain-number operand made a const node
    "add": lambda a, b, alpha=1: torch.add(a, b, alpha=alpha),
    "sub": lambda a, b, alpha=1: torch.sub(a, b, alpha=alpha),
    "rsub": lambda a, b, alpha=1: torch.rsub(a, b, alpha=alpha), "mul": torch.mul, "div": torch.div,
    "remainder": torch.remainder}
_CONST_IDS = 1 << 40  # value ids of const nodes, clear of the traced graph's


def _chunk_fn(chunks: int, dim: int) -> Callable:
    # prim::ConstantChunk keeps its arguments as node attributes (the dispatcher's ConstantChunk -> chunk)
    def chunk(x):
        return torch.chunk(x, chunks, dim)
    return chunk


def _list(*a):
    return list(a)


def _tuple(*a):
    return tuple(a)


def _unpack(x):
    return tuple(x)


def _index(x, i):
    return x[i]


def _same_shape(a, b) -> bool:
    ta, tb = a.type(), b.type()
    if ta.kind() != "TensorType" or tb.kind() != "TensorType":
        return False
    sa, sb = ta.sizes(), tb.sizes()
    return sa is not None and sa == sb and ta.scalarType() == tb.scalarType()


def _op_name(n, base: str, ins, arg_ids: List[int], g: Graph, param_of) -> str:
    if base in ("_convolution", "conv2d", "conv_transpose2d"):
        w = g.consts.get(arg_ids[1])
        if not isinstance(w, torch.Tensor) or arg_ids[1] not in param_of or w.dim() != 4:
            return _conv1d_name(n, base, arg_ids, g, param_of)
        transposed = bool(g.consts.get(arg_ids[6])) if base == "_convolution" else base == "conv_transpose2d"
        groups = int(g.consts.get(arg_ids[8 if base == "_convolution" else 6], 1))
        if transposed:  # weight [in, out/groups, kh, kw]
            return "depthwise_conv_transpose_2d" if w.shape[1] == 1 and groups == w.shape[0] else "conv_transpose_2d"
        cin = w.shape[1] * groups
        return "depthwise_conv2d" if groups != 1 and groups == cin and w.shape[0] % cin == 0 else "conv2d"
    if base in ("add", "mul", "sub", "div"):
        if base == "div" and len(ins) > 2:
            return n.kind()  # rounding_mode: not the dispatcher's div
        return {"add": "elemwise_add", "mul": "elemwise_mul", "sub": "elementwise_sub", "div": "elemwise_div"}[base]
    if base == "batch_norm" and _bn_computed_affine(ins, arg_ids, param_of):
        return n.kind()
    if base == "hardtanh":
        lo, hi = g.consts.get(arg_ids[1]), g.consts.get(arg_ids[2])
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        return "hardtanh"
    if base == "relu6":
        return "relu6"
    if base == "linear":
        return "dense" if arg_ids[1] in param_of else n.kind()
    if base == "mean":
        # the dispatcher's mean matches the schema strings of older torch only; with torch >= 1.13 nndct parses it
        # as an op it does not know and runs it in float (seen: "new op `aten::mean` as a float operator")
        return n.kind()
    if base == "max" and len(ins) == 2:
        return n.kind()  # the elementwise max(a, b)
    return _ATEN.get(base, n.kind())


def _conv1d_name(n, base: str, arg_ids: List[int], g: Graph, param_of) -> str:
    """parse/op_dispatcher.py _convolution: a 3-d weight is TorchConv1d, NNDCT_OP.CONV1D unless depthwise
    (DEPTHWISE_CONV1D is not among the quantizable ops: not emulated, it runs in float under its aten name)."""
    w = g.consts.get(arg_ids[1])
    if base != "_convolution" or not isinstance(w, torch.Tensor) or arg_ids[1] not in param_of or \
            w.dim() not in (3, 5) or g.consts.get(arg_ids[6]):
        return n.kind()
    groups = int(g.consts.get(arg_ids[8], 1))
    cin = w.shape[1] * groups
    if groups != 1 and groups == cin and w.shape[0] % cin == 0:
        return n.kind()
    return "conv1d" if w.dim() == 3 else "conv3d"


def _bn_computed_affine(ins, arg_ids: List[int], param_of) -> bool:
    """A batch_norm whose weight or bias is computed by an op, not a parameter (timm's ScaledStdConv2d
    standardizes conv weights with F.batch_norm(w, None, None, weight=gain * scale, training=True)): nndct's
    dispatcher raises on it ("weight or bias is not a constant param!", parse/op_dispatcher.py batch_norm) and
    the parser keeps it as the float op `aten::batch_norm` (parser.py _create_op falls back to default)."""
    return any(len(ins) > i and ins[i].node().kind() != "prim::Constant" and arg_ids[i] not in param_of
               for i in (1, 2))


def _set_attrs(node: Node, n, base: str, a: List[int], g: Graph, param_of: Dict[int, str]) -> None:
    c = g.consts
    op = node.op
    if op in CONV_OPS or op in CONV1D_OPS or op in CONV3D_OPS:
        if base == "_convolution":
            node.attrs.update(stride=_pair(c[a[3]]), padding=_pair(c[a[4]]), dilation=_pair(c[a[5]]),
                              output_padding=_pair(c[a[7]]), groups=int(c[a[8]]))
        elif base == "conv2d":
            node.attrs.update(stride=_pair(c[a[3]]), padding=c[a[4]], dilation=_pair(c[a[5]]),
                              output_padding=[0, 0], groups=int(c[a[6]]))
        else:
            node.attrs.update(stride=_pair(c[a[3]]), padding=_pair(c[a[4]]), output_padding=_pair(c[a[5]]),
                              groups=int(c[a[6]]), dilation=_pair(c[a[7]]))
        _bind_params(node, a[1], a[2], g, param_of)
    elif op == "dense":
        _bind_params(node, a[1], a[2] if len(a) > 2 else None, g, param_of)
    elif op in NORM_SLOTS:
        # affine norms quantize their weight and bias like a conv's (pytorch_nndct/nn/modules/group_norm.py ...)
        wi, bi = NORM_SLOTS[op]
        if a[wi] in param_of:
            _bind_params(node, a[wi], a[bi] if a[bi] in param_of else None, g, param_of)
    elif op == "batch_norm":
        node.attrs["bn"] = [c.get(i) for i in a[1:5]] + [float(c[a[7]])]
        key = param_of.get(a[1]) or param_of.get(a[3]) or ""
        node.module_path = key.rsplit(".", 1)[0]
    elif op == "prelu":
        if a[1] in param_of:
            node.weight = c[a[1]].detach().clone()
            node.module_path = param_of[a[1]].rsplit(".", 1)[0]
    elif op == "leaky_relu":
        node.attrs["negative_slope"] = float(c.get(a[1], 0.01)) if len(a) > 1 else 0.01
    elif op == "avgpool":
        node.attrs["kernel"] = _pair(c[a[1]])
    elif op == "adaptive_avg_pool2d":
        # nndct leaves an adaptive pool whose output size does not divide its input's unquantized, from the
        # first batch on (pytorch_nndct/nn/modules/adaptive_avg_pool.py); quant_info.json lists it with null
        si, so = n.inputsAt(0).type().sizes(), n.output().type().sizes()
        if si is not None and so is not None and any(o == 0 or i % o for i, o in zip(si[2:], so[2:])):
            node.attrs["skip_quant"] = True
    elif op == "resize":
        node.attrs["mode"] = "nearest" if base == "upsample_nearest2d" else "bilinear"
    elif op == "shape":
        node.attrs["dim"] = c.get(a[1]) if len(a) > 1 else None
    elif op in ("mean", "sum"):
        node.attrs["dims"] = c.get(a[1])


def _bind_params(node: Node, w_id: int, b_id: Optional[int], g: Graph, param_of: Dict[int, str]) -> None:
    node.weight = g.consts[w_id].detach().clone()
    node.module_path = param_of[w_id].rsplit(".", 1)[0]
    b = g.consts.get(b_id) if b_id is not None else None
    node.bias = b.detach().clone() if isinstance(b, torch.Tensor) else None
    node.attrs["weight_key"] = param_of[w_id]
    node.attrs["bias_key"] = param_of.get(b_id) if b_id is not None else None


# the dropouts nndct's dispatcher maps to its DROPOUT op (aten::feature_dropout_ stays a float op of its own)
_DROPOUTS = ("aten::dropout", "aten::dropout_", "aten::feature_dropout")
_PASSED_ON = ("aten::alias", "prim::ListConstruct", "prim::TupleConstruct") + _SIMPLE_OPS


def _late_batchnorms(graph) -> Set[Any]:
    """The aten::batch_norm nodes reading a conv's output that nndct does not fold into it, because the conv has
    left GraphSearcher's sliding window by the time the depth-first walk of FuseBnToConv reaches them
    (nndct_shared/optimization/commander.py FuseBnToConv, nndct_shared/nndct_graph/graph_searcher.py
    _find_node_from_type_and_apply_action_recursion). The window keeps the last nodes entered, as many as the
    longest pattern searched: 3 when the graph has a concat ([conv, concat, bn] is searched), 2 otherwise.
    The conv's readers are entered in their order (its output's uses), each with its whole subtree, and every
    node below a reader is entered again even when seen before; so the conv is pushed out once a reader before
    the BatchNorm has readers of its own (window 2) or readers of readers (window 3), and only a BatchNorm met
    while it is still there is folded: conv -> bn1, conv -> bn2 folds bn1 only, and y = conv(x); bn(y) with
    y.mean() read first folds nothing. Read on the traced graph, through the nodes nndct's graph does not have
    (the tracer's aliases, lists packed into their readers, removed Int / NumToTensor)."""
    nodes = list(graph.nodes())
    window = 3 if any(n.kind() == "aten::cat" for n in nodes) else 2

    def readers(n) -> List[Any]:
        found = []
        for u in (u for o in n.outputs() for u in o.uses()):
            found += readers(u.user) if u.user.kind() in _PASSED_ON else [u.user]
        return found

    def reaches(n, depth: int) -> bool:  # n has a chain of `depth` readers below it
        return depth == 0 or any(reaches(r, depth - 1) for r in readers(n))

    late = set()
    for n in nodes:
        if n.kind() != "aten::batch_norm":
            continue
        src = n.inputsAt(0).node()
        while src.kind() == "aten::alias":
            src = src.inputsAt(0).node()
        if src.kind() in _DROPOUTS:
            # nndct's graph still has the dropout when FuseBnToConv searches [conv, bn] and [conv, concat, bn]
            # (nndct_shared/optimization/optimizer.py removes dropouts after it): the BatchNorm stays
            late.add(n)
            continue
        if src.kind() != "aten::_convolution":
            continue
        for r in readers(src):
            if r == n:
                break
            if reaches(r, window - 1):
                late.add(n)
                break
    return late


def _fold_bn_into(g: Graph, prods: List[Node], a: List[int], consumers: Dict[int, int], ins,
                  param_of: Dict[int, str]) -> bool:
    """Fold aten::batch_norm into the conv that produced its input (whatever else reads the conv's output, if
    nndct's search meets the BatchNorm while the conv is in its window: see _late_batchnorms),
    or into every conv of a concat of convs that only the BatchNorm reads, each conv taking its slice of the
    channels (nndct_shared/optimization/commander.py FuseBnToConv: patterns [conv, bn] and [conv, concat, bn];
    fuse_conv_bn.py ConvBnHandler; e.g. timm's MixedConv2d, split -> convs -> cat -> BatchNormAct2d); returns
    whether it did."""
    if len(prods) != 1:
        return False
    shared = consumers.get(ins[0].unique(), 0) != 1
    if shared and prods[0].op not in CONV_OPS + CONV3D_OPS:
        return False  # a concat read by another op too is left alone (ConvBnHandler: concat_node.out_nodes)
    c = g.consts
    mean, var = c.get(a[3]), c.get(a[4])
    if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        return False
    gamma, beta, eps = c.get(a[1]), c.get(a[2]), float(c[a[7]])
    gamma = gamma.detach() if isinstance(gamma, torch.Tensor) else torch.ones_like(var)
    beta = beta.detach() if isinstance(beta, torch.Tensor) else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var.detach() + eps)
    offset = beta - mean.detach() * scale
    if prods[0].op in CONV_OPS + CONV3D_OPS:
        # [conv, bn] is folded whatever else reads the conv's output (ConvBnHandler does not look), and those
        # readers then get the normalised output too (another BatchNorm among them included)
        _fold_scale(prods[0], scale, offset)
        if shared:
            bn = (param_of.get(a[3]) or "").rsplit(".", 1)[0]
            g.notes.append("BatchNorm {} is folded into conv {}, whose output is read elsewhere too: as in "
                           "vai_q_pytorch, those readers get the normalised output, so the quantized model computes "
                           "what the float model does not. Give the BatchNorm a conv of its own, or read the conv "
                           "only through it".format(bn or "?", prods[0].module_path or "?"))
        return True
    parts = prods[0].attrs.get("cat_parts") if prods[0].op == "concat" else None
    # every input of the concat a distinct conv (ConvBnHandler: all parents of the concat in BN_MERGED_TYPES)
    # not already carrying a BatchNorm (its child must be the concat itself), and the concat along channels
    if not parts or prods[0].attrs.get("cat_dim") not in (1, -3):
        return False
    convs = [p[0] if len(p) == 1 else None for p, _ in parts]
    if any(cv is None or cv.op not in CONV_OPS + CONV3D_OPS or cv.attrs.get("bn_folded") for cv in convs) or \
            len(set(map(id, convs))) != len(convs) or sum(size for _, size in parts) != scale.numel():
        return False
    begin = 0
    for conv, (_, size) in zip(convs, parts):
        _fold_scale(conv, scale[begin:begin + size], offset[begin:begin + size])
        begin += size
    return True


def _fold_scale(conv: Node, scale: torch.Tensor, offset: torch.Tensor) -> None:
    """w' = w * scale per output channel, b' = b * scale + offset (a conv without bias gains one)."""
    w, b = conv.weight, conv.bias
    if conv.op.startswith("conv_transpose") or conv.op.startswith("depthwise_conv_transpose"):
        # torch keeps [in, out/groups, kh, kw]; the output channel of column j in group k is k * out/groups + j
        groups = conv.attrs["groups"]
        gsz = w.shape[1]
        s = scale.view(groups, 1, gsz, 1, 1)
        w = (w.view(groups, -1, gsz, *w.shape[2:]) * s).view_as(w)
    else:
        w = w * scale.view(-1, *[1] * (w.dim() - 1))
    conv.weight, conv.bias = w, (offset if b is None else b * scale + offset)
    conv.attrs["bn_folded"] = True


def _drop_dead(g: Graph) -> None:
    """Steps whose values nothing kept needs (a view removed above leaves its size reads behind) go, and the
    nodes with them (the shape nodes nndct removes along with the view); then the nodes are renumbered."""
    need: Set[int] = {g.output_id}
    keep: List[Step] = []
    for step in reversed(g.steps):
        if any(o in need for o in step.outs) or (step.node is not None and step.node.op not in ("shape",) and
                                                 not step.kind.startswith("prim::")):
            need.update(step.ins)
            keep.append(step)
    keep.reverse()
    dropped = {id(s.node) for s in g.steps if s.node is not None} - {id(s.node) for s in keep if s.node is not None}
    g.steps = keep
    if dropped:
        g.nodes = [n for n in g.nodes if id(n) not in dropped]
        for n in g.nodes:
            n.parents = [p for p in n.parents if id(p) not in dropped]
    for i, n in enumerate(g.nodes):
        n.idx = i
        n.name = node_name(n.op, i)
    g.unsupported = ["{} ({})".format(n.name, n.op) for n in g.nodes if n.custom]


def _init_params(g: Graph) -> None:
    seen: Set[str] = set()
    for node in g.nodes:
        if node.op == "batch_norm":
            # an unfolded BatchNorm is computed as x * scale + offset with both quantized
            # (nndct_shared/optimization/commander.py ConvertBNParams)
            gamma, beta, mean, var, eps = node.attrs["bn"]
            gamma = gamma if isinstance(gamma, torch.Tensor) else torch.ones_like(var)
            beta = beta if isinstance(beta, torch.Tensor) else torch.zeros_like(var)
            node.weight = gamma / torch.sqrt(var + eps)
            node.bias = beta - mean * node.weight
        if node.weight is None or not node.module_path:
            continue
        # the state_dict keys of the parameters the op reads (nn.MultiheadAttention's F.linear reads
        # `in_proj_weight` / `in_proj_bias`; nndct names the params after the graph's param tensors), else
        # `<module>.weight` / `.bias` (a bias a folded BatchNorm gives a conv without one)
        wkey = node.attrs.get("weight_key") or node.module_path + ".weight"
        node.weight_name = _unique(g.full(wkey), node, seen)
        if node.bias is not None:
            bkey = node.attrs.get("bias_key") or node.module_path + ".bias"
            node.bias_name = _unique(g.full(bkey), node, seen)


def _unique(name: str, node: Node, seen: set) -> str:
    # a conv module called twice gets `<param>.<node id>` the second time (nndct_shared/optimization/
    # commander.py DecoupleSharedParamsInConv, convs only). It runs before BatchNorm folding and dropout
    # removal, on the id the parsed graph gave the node (base_graph.py add_node: -sys.maxsize + the number of
    # nodes added before it, the graph's input and return nodes first): the node's index + 1 + the nodes removed
    # before it. Seen on a real run of timm coat_lite_tiny: `cpe1.proj.weight.-9223372036854775718` for
    # nndct_depthwise_conv2d_85, after three dropouts.
    if name in seen and node.op in CONV_OPS + CONV1D_OPS + CONV3D_OPS:
        name = "{}.{}".format(name, -sys.maxsize + node.idx + 1 + node.attrs.get("removed_before", 0))
    seen.add(name)
    return name
