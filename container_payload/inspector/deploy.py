"""The third stage: nndct's deployable graph of the captured model, as vai_q_pytorch 3.5's rule-based Inspector
sees it, in the DevNodes its filters and partition read (filters.py, partition.py).

Source (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch): pytorch_nndct/hardware/inspector.py
`_prepare_deployable_graph` clones the quantizable graph (container_payload/graph/nndct.py) and runs
nndct_shared/compile/deploy_optimizer.py's DevGraphOptimizer on it: `strip_redundant_ops` (contiguous goes),
`update_op_attrs` (a transpose becomes a permute of the whole order), `constant_folding` (the size arithmetic an
op reads as an attribute, a view's sizes, an interpolate's size, is evaluated and its nodes go), `layout_tranform`
(NCHW -> NHWC: every conv, pool, resize, BatchNorm ... is laid out NHWC, the layout is pushed up through its
parents and down through its children while they keep the rank and are no permute or custom op, and a permute is
inserted where it cannot go further: `<parent>_swim_transpose_<i>` before, `<parent>_sink_transpose_<i>` after,
`<node>_neighbor_transpose_<i>` where a binary op joins both layouts; chains of permutes are merged, identity ones
dropped, sibling permutes of one order shared), then, as nndct's export does (qproc/utils.py `_deploy_optimize`),
`update_node_data` and `convert_adaptive_pool_to_pool` (an adaptive average pool whose output divides its input
becomes an average pool with kernel and stride from the NHWC shapes). Shapes are the traced ones, permuted to
each node's layout (ModuleHooker.update_blobs_once), a permute's the permuted shape of its input.

The order of the nodes, of each tensor's readers, and of the walks is nndct's, since they decide where permutes
go and which are kept (inserted nodes are placed right after their parent, a moved reader goes last).

Where nndct itself fails, the node carries `nndct_error` (what vai_q_pytorch raises there; nndct_failure gives
the one it meets first) and hostctl goes on: a depthwise conv with a channel multiplier that equalization pairs
(ValueError while parsing), a tensor whose rank differs from its permute's order (RuntimeError in
update_node_data), an adaptive pool that does not divide (AttributeError: KERNEL in its filter: hostctl sends it
to the CPU and says why), a mul by a parameter (AttributeError in filter_eltwise), an inserted 3-d or 5-d permute
(KeyError in the Inspector's message table: hostctl gives it a message of its own).
"""

from collections import OrderedDict, deque
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from container_payload.graph.nndct import Graph, Node

from .filters import DevNode

INPUT, RETURN, CONST, PERMUTE, TRANSPOSE = "nndct_input", "nndct_return", "nndct_const", "nndct_permute", \
    "nndct_transpose"
SHAPE, ZEROS, QUANT_STUB = "nndct_shape", "nndct_zeros", "nndct_quant_stub"
ADAPTIVE_AVG_POOL = "nndct_adaptive_avg_pool2d"
AVG_POOL = "nndct_avgpool"
MULTIPLY = "nndct_elemwise_mul"

# layout_tranform's implicit_ops: laid out NHWC by XIR itself
IMPLICIT = frozenset("nndct_" + t for t in (
    "conv2d", "depthwise_conv2d", "depthwise_conv_transpose_2d", "conv_transpose_2d", "maxpool", "avgpool",
    "adaptive_avg_pool2d", "interpolate", "up_sampling", "resize", "batch_norm", "maxpool1d", "conv1d", "conv3d",
    "depthwise_conv3d", "depthwise_conv_transpose_3d", "conv_transpose_3d", "pixel_shuffle", "pixel_unshuffle",
    "resize_3d", "resize_nearest_3d", "reorg", "correlation1d_elemwise", "correlation2d_elemwise", "cost_volume"))

# NNDCT_OP types whose operator is a base_op.CustomOp (parse/op_dispatcher.py: TorchBaseOperation, TorchSelect);
# ops nndct does not know (`aten::...`) are too (TorchAutoInferOperation)
_CUSTOM = frozenset("nndct_" + t for t in (
    "addmm", "interpolate", "resize_nearest_3d", "select", "expand", "slice_tensor_inplace_copy", "normalize",
    "expand_as", "quantile", "equal", "scalar_equal", "index", "index_put_inplace", "stack", "reluk",
    "channel_scale", "strided_slice_inplace_copy", "grid_sample", "tuple_unpack", "derive_loop_index", "ceil",
    "len", "scalar_lt", "if", "tensor_to_scalar", "stft", "unique_dim", "unique2", "unique", "list", "tuple",
    "tuple_index", "dtype", "argmax_no_dim", "shape_as_tensor", "loop")) | {"constant_with_reshape"}

# ops whose tensor arguments all stay inputs (nndct keeps them in INPUT / OTHER, or in no attribute at all):
# constant_folding evaluates only what the other ops read as attributes (a view's sizes, a resize's size)
_ALL_INPUTS = frozenset("nndct_" + t for t in (
    "elemwise_add", "elemwise_mul", "elementwise_sub", "elemwise_div", "rsub", "concat", "matmul", "relu",
    "tanh", "hardtanh", "mish", "contiguous", "chunk", "cast", "floor", "floor_divide", "elemwise_exp", "detach",
    "sigmoid", "repeat", "copy_", "unsqueeze", "clamp", "input", "return"))

_SWIM = {2: (0, 1), 3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 3, 4, 2, 1)}  # NCHW -> NHWC
_SINK = {2: (0, 1), 3: (0, 2, 1), 4: (0, 3, 1, 2), 5: (0, 4, 3, 1, 2)}  # NHWC -> NCHW
# the Inspector's messages for the permutes it inserted (inspector.py _attach_extra_node_msg)
_LAYOUT_MSG = {(0, 3, 1, 2): "from 'NHWC' to 'NCHW'", (0, 2, 3, 1): "from 'NCHW' to 'NHWC'"}
_MSG = "quantizer insert this permute operation to convert data layout {} for deployment."


class _Tensor:
    """A tensor of the graph: its producer (None for a parameter), its shape (NCHW until the shapes are updated
    to the layout), its readers."""

    __slots__ = ("node", "shape", "uses", "is_list")

    def __init__(self, node: Optional["_Node"], shape: Optional[List[int]]) -> None:
        self.node = node
        self.shape = shape
        self.uses: List[List[Any]] = []  # [user, offset] in the order the readers were added
        self.is_list = False  # a list of tensors (an unbind nobody unpacked): nndct keeps no shape for it

    @property
    def ndim(self) -> Optional[int]:
        return len(self.shape) if self.shape else None


class _Node:
    """A node of the graph being optimized: nndct's Node with what the passes read."""

    def __init__(self, name: str, op: str, src: Optional[Node] = None) -> None:
        self.name = name
        self.op = op
        self.src = src
        self.ins: List[_Tensor] = []
        self.outs: List[_Tensor] = []
        self.attrs: Dict[str, Any] = {}
        self.tin: Optional[Tuple[int, ...]] = None  # transpose_in_order
        self.tout: Optional[Tuple[int, ...]] = None  # transpose_out_order
        self.custom = "::" in op or op in _CUSTOM
        self.permute = op in (PERMUTE, TRANSPOSE)  # a base_op.Permute (TorchPermute, TorchTranspose)
        self.messages: List[str] = []
        self.error: Optional[Tuple[int, str]] = None  # (stage, what vai_q_pytorch raises on this node)
        self.args: List[Any] = []  # the arguments: a tensor, a list of them, or None (a plain value)
        self.consts: List[Any] = []  # the arguments' constant values (None where computed)

    def __repr__(self) -> str:
        return self.name

    def add_in(self, t: _Tensor) -> None:
        t.uses.append([self, len(self.ins)])
        self.ins.append(t)

    def parents(self) -> List["_Node"]:
        return [t.node for t in self.ins if t.node is not None]

    def children(self) -> List["_Node"]:
        return [u[0] for t in self.outs for u in t.uses]


class _Graph:
    def __init__(self, nodes: List[_Node]) -> None:
        self.nodes = nodes

    def insert_after(self, new: _Node, after: _Node) -> None:
        self.nodes.insert(self.nodes.index(after) + 1, new)

    def destroy(self, node: _Node) -> None:
        for i, t in enumerate(node.ins):
            t.uses[:] = [u for u in t.uses if not (u[0] is node and u[1] == i)]
        node.ins = []
        self.nodes.remove(node)

    def remove(self, node: _Node) -> None:
        """base_graph.remove_node: its readers read its first input instead (appended to that input's readers)."""
        out, inp = node.outs[0], node.ins[0]
        _replace_uses(out, inp)
        self.destroy(node)

    def insert_between(self, new: _Node, parent: _Node, child: _Node) -> None:
        """base_graph.insert_node_between_nodes: the child's first read of the parent now reads new."""
        new.outs = [_Tensor(new, None)]
        found = None
        for t in parent.outs:
            for u in t.uses:
                if u[0] is child:
                    found = (t, u[1])
                    break
            if found:
                break
        if found is None:
            return
        tensor, offset = found
        child.ins[offset] = new.outs[0]
        moved = [u for u in tensor.uses if u[0] is child]
        tensor.uses[:] = [u for u in tensor.uses if u[0] is not child]
        new.outs[0].uses.extend(moved)
        new.add_in(tensor)
        self.insert_after(new, parent)


def _replace_uses(old: _Tensor, new: _Tensor) -> None:
    while old.uses:
        u = old.uses.pop(0)
        u[0].ins[u[1]] = new
        new.uses.append(u)


# -- building the graph from the capture ------------------------------------------------------------------------

def _nndct_type(g: Graph, node: Node) -> str:
    if node.op == "aten::_convolution" and node.step is not None:
        conv = _conv_type(g, node.step.ins)
        if conv:
            return conv
    return node.op if "::" in node.op else "nndct_" + node.op


def _conv_type(g: Graph, ins: List[int]) -> Optional[str]:
    """The convs capture leaves to float (3-d depthwise and transposed ones) have nndct's types all the same
    (parse/op_dispatcher.py _convolution)."""
    w = g.consts.get(ins[1]) if len(ins) > 8 else None
    if not isinstance(w, torch.Tensor) or w.dim() not in (3, 4, 5):
        return None
    transposed, groups = bool(g.consts.get(ins[6])), g.consts.get(ins[8], 1)
    dims = {3: "1d", 4: "2d", 5: "3d"}[w.dim()]
    if transposed:
        if w.dim() == 3:
            return None  # nndct: NotImplementedError, the op stays aten::_convolution
        depthwise = w.shape[1] == 1 and groups == w.shape[0]
        return "nndct_{}conv_transpose_{}".format("depthwise_" if depthwise else "", dims)
    cin = w.shape[1] * groups
    depthwise = groups != 1 and groups == cin and w.shape[0] % cin == 0
    return "nndct_{}conv{}".format("depthwise_" if depthwise else "", dims)


def _shape(v: Any) -> Optional[List[int]]:
    return [int(s) for s in v] if v is not None else None


def _build(g: Graph) -> List[_Node]:
    """nndct's graph of the capture: its nodes in order, each with its input tensors (its arguments' tensors in
    order, parameters included, as nndct's in_tensors) and output tensors, the graph's return last."""
    made: Dict[int, _Node] = {}
    nodes: List[_Node] = []
    vals: Dict[int, Any] = {}
    args_of: Dict[int, List[Any]] = {}  # id(_Node) -> its arguments, each a tensor, a list of them or None
    for node in g.nodes:
        d = _Node(node.nndct_name or node.name, _nndct_type(g, node), node)
        made[id(node)] = d
        nodes.append(d)
        if node.op == "input":
            d.outs = [_Tensor(d, _shape(g.shapes.get(g.input_id)))]
            vals[g.input_id] = d.outs[0]
    for step in g.steps:
        kind = step.kind
        node = step.node
        if node is not None:
            d = made.get(id(node))
            if d is None:
                continue
            if node.op == "const":
                value = node.attrs.get("value")
                shape = list(value.shape) if isinstance(value, torch.Tensor) else []
                d.outs = [_Tensor(d, shape)]
                vals[step.outs[0]] = d.outs[0]
                continue
            args = [_value(g, vals, i) for i in step.ins]
            args_of[id(d)] = args
            for a in args:
                for t in (a if isinstance(a, list) else [a]):
                    if isinstance(t, _Tensor):
                        d.add_in(t)
            d.outs = []
            for o in step.outs:
                t = _Tensor(d, _shape(g.shapes.get(o)))
                t.is_list = o in g.list_values
                d.outs.append(t)
                vals[o] = t
            continue
        base = kind.split("::")[-1]
        if base in ("ListConstruct", "TupleConstruct"):
            vals[step.outs[0]] = [_value(g, vals, i) for i in step.ins]
        elif base in ("ListUnpack", "TupleUnpack"):
            src = vals.get(step.ins[0])
            if isinstance(src, list):
                for o, item in zip(step.outs, src):
                    vals[o] = item
            elif isinstance(src, _Tensor) and src.node is not None:
                # a list output (chunk, unbind) is unpacked: nndct's node has one output per item
                owner = src.node
                pieces = [_Tensor(owner, _shape(g.shapes.get(o))) for o in step.outs]
                at = owner.outs.index(src)
                owner.outs[at:at + 1] = pieces
                for o, t in zip(step.outs, pieces):
                    vals[o] = t
        elif base in ("TupleIndex", "ListIndex") or kind == "aten::__getitem__":
            src = vals.get(step.ins[0])
            idx = g.consts.get(step.ins[1]) if len(step.ins) > 1 else None
            if isinstance(src, list) and isinstance(idx, int) and -len(src) <= idx < len(src):
                vals[step.outs[0]] = src[idx]
        elif kind in ("aten::slice", "aten::slice_") and isinstance(vals.get(step.ins[0]), _Tensor):
            # a slice joined to the slice before it (one strided_slice per chain): its tensor arguments (ends
            # computed from sizes) are the node's too, and the node puts out the last slice's shape
            t = vals[step.ins[0]]
            owner = t.node
            if owner is not None:
                extra = [_value(g, vals, i) for i in step.ins[1:]]
                args_of.setdefault(id(owner), []).extend(extra)
                for a in extra:
                    if isinstance(a, _Tensor):
                        owner.add_in(a)
            t.shape = _shape(g.shapes.get(step.outs[0]))
            vals[step.outs[0]] = t
        elif step.ins and step.outs:
            # NumToTensor / Int / ScalarImplicit: the value of its input passes on
            vals[step.outs[0]] = vals.get(step.ins[0])
    ret = _Node("return", RETURN)
    out = vals.get(g.output_id)
    if isinstance(out, _Tensor):
        ret.add_in(out)
    nodes.append(ret)
    for d in nodes:
        d.args = args_of.get(id(d), [])
        d.consts = [g.consts.get(i) for i in d.src.step.ins] if d.src is not None and d.src.step is not None else []
    return nodes


def _value(g: Graph, vals: Dict[int, Any], vid: int) -> Any:
    if vid in vals:
        return vals[vid]
    c = g.consts.get(vid)
    if isinstance(c, torch.Tensor):  # a parameter: a tensor without a producer
        return _Tensor(None, list(c.shape))
    return None


# -- the passes --------------------------------------------------------------------------------------------------

def _strip_redundant_ops(graph: _Graph) -> None:
    for node in [n for n in graph.nodes if n.op == "nndct_contiguous"]:
        graph.remove(node)


def _update_op_attrs(graph: _Graph) -> None:
    for node in graph.nodes:
        src = node.src
        if src is None or node.op not in (PERMUTE, TRANSPOSE):
            continue
        consts = node.consts
        if node.op == TRANSPOSE:
            dims = [c for c in consts[1:3]]
            ndim = node.ins[0].ndim if node.ins else None
            order = list(range(ndim or 0))
            if ndim and all(isinstance(d, int) for d in dims):
                order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
            node.attrs["order"] = order
            node.op = PERMUTE
        else:
            order = consts[1] if len(consts) > 1 else None
            node.attrs["order"] = list(order) if isinstance(order, (list, tuple)) else order


def _constant_folding(graph: _Graph) -> None:
    """Nodes a known op reads as an attribute (not as INPUT / OTHER) are evaluated and removed, with everything
    above them up to the shape and const nodes (deploy_optimizer.py constant_folding, _materialize)."""
    folded: List[_Node] = []
    seen = set()
    for node in graph.nodes:
        if node.custom or node.op in _ALL_INPUTS:
            continue
        for a in node.args[1:]:
            for t in (a if isinstance(a, list) else [a]):
                if not isinstance(t, _Tensor) or t.node is None:
                    continue
                todo = deque([t.node])
                while todo:
                    n = todo.popleft()
                    if id(n) not in seen:
                        seen.add(id(n))
                        folded.append(n)
                        if n.op not in (SHAPE, CONST):
                            todo.extend(n.parents())
    for n in folded:
        for t in n.outs:
            while t.uses:
                user, offset = t.uses[0]
                _remove_input(user, offset)
        graph.destroy(n)


def _remove_input(node: _Node, i: int) -> None:
    t = node.ins[i]
    t.uses[:] = [u for u in t.uses if not (u[0] is node and u[1] == i)]
    for j in range(i + 1, len(node.ins)):
        for u in node.ins[j].uses:
            if u[0] is node and u[1] == j:
                u[1] -= 1
                break
    node.ins.pop(i)


def _dim_transparent(node: _Node) -> bool:
    return bool(node.ins and node.outs and node.ins[0].ndim and node.outs[0].ndim and
                node.ins[0].ndim == node.outs[0].ndim)


def _keeps_memory(node: _Node, order: Sequence[int]) -> bool:
    """_not_change_memory_reshape: a reshape commutes with the permute (nndct tests it on random data)."""
    if node.op != "nndct_reshape":
        return True
    src, dst = node.ins[0].shape, node.outs[0].shape
    if not src or not dst or int(np.prod(src)) != int(np.prod(dst)) or len(order) != len(dst):
        return False
    data = np.arange(int(np.prod(src)), dtype=np.int64).reshape(src)
    a = data.reshape(dst).transpose(order).flatten()
    b = data.transpose(order).reshape(dst).flatten()
    return bool((a == b).all())


def _special_layout(node: _Node) -> bool:
    return bool(node.outs and node.outs[0].ndim and node.outs[0].ndim >= 3)


def _layout_transform(graph: _Graph) -> None:
    insert_pos = []
    for n in graph.nodes:
        if n.op not in IMPLICIT:
            continue
        if not n.ins or not n.outs or n.ins[0].ndim not in _SWIM or n.outs[0].ndim not in _SWIM:
            # nndct's layout tables go from 2 to 5 dimensions: it fails here (KeyError); hostctl leaves the node
            n.error = n.error or (_DATA, "KeyError: {}".format(n.outs[0].ndim if n.outs else None))
            continue
        insert_pos.append(n)
    swim: "OrderedDict[Tuple[int, ...], List[_Node]]" = OrderedDict()
    swim_in: Dict[int, Tuple[int, ...]] = {}
    sink: "OrderedDict[Tuple[int, ...], List[_Node]]" = OrderedDict()
    for node in insert_pos:
        swim.setdefault(_SWIM[node.outs[0].ndim], []).append(node)
        swim_in[id(node)] = _SWIM[node.ins[0].ndim]
        sink.setdefault(_SINK[node.outs[0].ndim], []).append(node)

    inserted: List[_Node] = []  # nodes_need_to_remove
    between_swim: "OrderedDict[Tuple[int, ...], List[Tuple[_Node, _Node]]]" = OrderedDict()
    visited = set()
    for order, nodes in swim.items():
        for start in nodes:
            q = deque([start])
            visited.add(id(start))
            start.tout = order
            start.tin = swim_in[id(start)]
            while q:
                node = q.popleft()
                for pn in node.parents():
                    if id(pn) in visited:
                        continue
                    if not _special_layout(pn) or pn.op in IMPLICIT:
                        continue
                    if pn.op in (INPUT, QUANT_STUB, CONST, ZEROS) or (
                            _dim_transparent(pn) and not pn.permute and not pn.custom and
                            _keeps_memory(pn, node.tin)):
                        pn.tout = node.tin
                        pn.tin = pn.tout
                        q.append(pn)
                        visited.add(id(pn))
                    else:
                        between_swim.setdefault(order, []).append((pn, node))
    index = 0
    for order, pairs in between_swim.items():
        for pn, cn in pairs:
            new = _permute("_".join([pn.name, "swim_transpose", str(index)]), list(order))
            graph.insert_between(new, pn, cn)
            inserted.append(new)
            index += 1

    between_sink: "OrderedDict[Tuple[int, ...], List[Tuple[_Node, _Node]]]" = OrderedDict()
    visited = set()
    for node in graph.nodes:
        if node.tout:
            members = sink.setdefault(_SINK[len(node.tout)], [])
            if node not in members:
                members.append(node)
    for order, nodes in sink.items():
        for start in nodes:
            if id(start) in visited:
                continue
            q = deque([start])
            visited.add(id(start))
            while q:
                node = q.popleft()
                for cn in node.children():
                    if id(cn) in visited:
                        continue
                    if cn.op in IMPLICIT or cn.op == RETURN:
                        continue
                    if cn.op == SHAPE:
                        visited.add(id(cn))
                        continue
                    if cn.tout:
                        q.append(cn)
                        visited.add(id(cn))
                    elif _dim_transparent(cn) and not cn.permute and not cn.custom and \
                            _keeps_memory(cn, node.tout):
                        cn.tin = node.tout
                        cn.tout = cn.tin
                        q.append(cn)
                        visited.add(id(cn))
                    else:
                        between_sink.setdefault(order, []).append((node, cn))
    index = 0
    for order, pairs in between_sink.items():
        for pn, cn in pairs:
            new = _permute("_".join([pn.name, "sink_transpose", str(index)]), list(order))
            graph.insert_between(new, pn, cn)
            inserted.append(new)
            index += 1

    neighbor: "OrderedDict[int, Tuple[_Node, Tuple[int, ...]]]" = OrderedDict()
    for node in graph.nodes:
        parents = node.parents()
        if len(parents) <= 1 or not node.children():
            continue
        if all(p.tout is None for p in parents) or all(p.tout is not None for p in parents):
            continue
        order = next(p.tout for p in parents if p.tout is not None)
        neighbor[id(node)] = (node, order)
    for node, order in neighbor.values():
        index = 0
        for pn in node.parents():
            if pn.tout is None and pn.outs[0].ndim and node.outs[0].ndim and pn.outs[0].ndim == node.outs[0].ndim:
                new = _permute("_".join([node.name, "neighbor_transpose", str(index)]), list(order))
                graph.insert_between(new, pn, node)
                index += 1
                inserted.append(new)

    _merge_permutes(graph, inserted)


def _permute(name: str, order: List[int]) -> _Node:
    node = _Node(name, PERMUTE)
    node.attrs["order"] = order
    return node


def _merge_permutes(graph: _Graph, inserted: List[_Node]) -> None:
    """Chains of permutes become one (the model's own permute kept, else the last), identity ones go, and
    sibling permutes of one order share one (layout_tranform's merge_father_and_child_iteration and
    merge_brothers)."""
    to_remove = list(inserted)
    removing = {id(n) for n in to_remove}
    reserved: List[_Node] = []
    group: List[_Node] = []

    def merge_group() -> None:
        order: List[int] = []
        keep: Optional[_Node] = None
        for trans in group:
            prev = keep
            if id(trans) not in removing:
                keep = trans
            if prev is not None and keep is not prev and id(prev) not in removing:
                to_remove.append(prev)
                removing.add(id(prev))
            if not order:
                order = list(trans.attrs["order"])
            else:
                step = trans.attrs["order"]
                order = [order[step[i]] for i in range(len(order))]
        if keep is None:
            keep = group[-1]
        keep.attrs["order"] = order
        reserved.append(keep)
        group.clear()

    visited = set()
    for source in [n for n in graph.nodes if not n.ins]:
        stack = [source]
        while stack:
            node = stack.pop()
            visited.add(id(node))
            if node.permute:
                children = node.children()
                if children and all(c.permute for c in children):
                    group.append(node)
                    if len(children) > 1:
                        merge_group()
                else:
                    group.append(node)
                    merge_group()
            stack.extend(reversed([c for c in node.children() if id(c) not in visited]))

    kept = {id(n) for n in reserved}
    to_remove = [n for n in to_remove if id(n) not in kept]
    for node in reserved:
        if list(node.attrs["order"]) == list(range(len(node.attrs["order"]))):
            to_remove.append(node)
    gone = set()
    for node in to_remove:
        if id(node) in gone:
            continue
        gone.add(id(node))
        graph.remove(node)

    removing_now = {id(n) for n in to_remove}
    reserved_ids = {id(n) for n in reserved}
    destroyed: List[_Node] = []
    for node in graph.nodes:
        children = node.children()
        if len(children) > 1 and all(c.permute for c in children):
            orders = [c.attrs.get("order") for c in children]
            if any(o != orders[0] for o in orders[1:]):
                continue
            keep = None
            for c in children:
                if id(c) not in removing_now:
                    keep = c
            if keep is None:
                keep = children[0]
            for c in children:
                if c is not keep and id(c) in reserved_ids:
                    destroyed.append(c)
                    _replace_uses(c.outs[0], keep.outs[0])
    for node in destroyed:
        if node in graph.nodes:
            graph.destroy(node)


def _permuted(shape: Optional[List[int]], order: Optional[Sequence[int]]) -> Optional[List[int]]:
    if order is None or shape is None:
        return shape
    if len(order) != len(shape):
        raise _NdimError()
    return [shape[i] for i in order]


class _NdimError(Exception):
    pass


_NDIM_ERROR = "RuntimeError: The data dimensions should consistent with length of order"


def _update_shapes(graph: _Graph) -> Optional[Tuple[str, _Node]]:
    """update_nndct_blob_data / update_node_data: every output in its node's layout, a permute's output the
    permuted input. Returns nndct's error and the node it fails on, if it does."""
    error = None
    for node in graph.nodes:
        if node.op == RETURN:
            continue
        for t in node.outs:
            if not t.shape or t.is_list:
                continue
            try:
                t.shape = _permuted(t.shape, node.tout)
            except _NdimError:
                error = error or (_NDIM_ERROR, node)
    for node in graph.nodes:
        if node.op != PERMUTE or not node.ins:
            continue
        try:
            node.outs[0].shape = _permuted(node.ins[0].shape, node.attrs.get("order"))
        except _NdimError:
            error = error or (_NDIM_ERROR, node)
            node.outs[0].shape = node.ins[0].shape
    return error


def _adaptive_pool_to_pool(graph: _Graph) -> None:
    for node in graph.nodes:
        if node.op != ADAPTIVE_AVG_POOL:
            continue
        if not node.ins or len(node.ins[0].shape or []) != 4 or len(node.outs[0].shape or []) != 4:
            node.error = node.error or (_FILTER, "AttributeError: KERNEL")
            continue
        ins, outs = node.ins[0].shape[1:3], node.outs[0].shape[1:3]
        if any(o == 0 or i % o for i, o in zip(ins, outs)):
            node.error = (_FILTER, "AttributeError: KERNEL")
            continue
        sh, sw = ins[0] // outs[0], ins[1] // outs[1]
        kh, kw = ins[0] - (outs[0] - 1) * sh, ins[1] - (outs[1] - 1) * sw
        node.op = AVG_POOL
        node.attrs.update(kernel=[kw, kh], stride=[sw, sh], pad=[0, 0, 0, 0], count_include_pad=True,
                          **({"global": True} if list(outs) == [1, 1] else {}))


# -- DevNodes --------------------------------------------------------------------------------------------------

def _pair_wh(v: Any) -> List[int]:
    v = [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]
    return v[::-1] if len(v) == 2 else v


def _attrs_for_filters(node: _Node) -> Dict[str, Any]:
    """The attributes filters.py reads, in nndct's conventions (KERNEL, STRIDE, DILATION [w, h], PAD
    [left, right, top, bottom])."""
    src = node.src
    a: Dict[str, Any] = {}
    if node.op == PERMUTE:
        a["order"] = list(node.attrs.get("order") or [])
    if src is None:
        return a
    s = src.attrs
    consts = node.consts
    if src.weight is not None and node.op in ("nndct_conv2d", "nndct_depthwise_conv2d", "nndct_conv_transpose_2d",
                                              "nndct_depthwise_conv_transpose_2d"):
        kh, kw = int(src.weight.shape[2]), int(src.weight.shape[3])
        pad = s.get("padding", [0, 0])
        ph, pw = (pad, pad) if isinstance(pad, int) else (int(pad[0]), int(pad[1])) if \
            isinstance(pad, (list, tuple)) else (0, 0)
        a.update(kernel=[kw, kh], stride=_pair_wh(s.get("stride", [1, 1])),
                 dilation=_pair_wh(s.get("dilation", [1, 1])), pad=[pw, pw, ph, ph],
                 output_padding=list(s.get("output_padding", [0, 0])), groups=s.get("groups", 1))
    elif "conv" in node.op and src.step is not None and src.step.kind == "aten::_convolution" and len(consts) > 7:
        a["output_padding"] = list(consts[7]) if isinstance(consts[7], (list, tuple)) else consts[7]
    elif node.op in ("nndct_maxpool", AVG_POOL) and src.op in ("maxpool", "avgpool"):
        kernel = consts[1] if len(consts) > 1 else None
        stride = consts[2] if len(consts) > 2 else None
        padding = consts[3] if len(consts) > 3 else [0, 0]
        if isinstance(kernel, (int, list, tuple)):
            k = _pair_hw(kernel)
            st = _pair_hw(stride) if stride not in (None, [], ()) else k
            p = _pair_hw(padding) if padding is not None else [0, 0]
            a.update(kernel=k[::-1], stride=st[::-1], pad=[p[1], p[1], p[0], p[0]])
            if node.op == "nndct_maxpool" and len(consts) > 4:
                a["dilation"] = _pair_hw(consts[4])[::-1]
    elif node.op == "nndct_resize":
        bilinear = s.get("mode") == "bilinear"
        a["mode"] = "BILINEAR" if bilinear else "NEAREST"
        align = consts[2] if bilinear and len(consts) > 2 else None
        a["align_corners"] = bool(align) if align is not None else False
        a["half_pixel_centers"] = (not bool(align)) if bilinear and align is not None else False
    elif node.op == "nndct_pad":
        kind = src.step.kind.split("::")[-1] if src.step is not None else ""
        a["mode"] = 2 if kind.startswith("replication_pad") else 0
    elif node.op == "nndct_leaky_relu":
        a["alpha"] = s.get("negative_slope", 0.01)
    elif node.op == CONST:
        value = s.get("value")
        a["data"] = value.tolist() if isinstance(value, torch.Tensor) else value
    return a


def _pair_hw(v: Any) -> List[int]:
    if isinstance(v, int):
        return [v, v]
    v = [int(x) for x in v]
    return v * 2 if len(v) == 1 else v


def _weight_shape(node: _Node) -> Optional[List[int]]:
    """The weights in nndct's OHWI layout (parse/parser.py _load_data)."""
    src = node.src
    if src is None or src.weight is None or src.weight.dim() != 4:
        return None
    w = list(src.weight.shape)
    if node.op == "nndct_conv2d":
        return [w[0], w[2], w[3], w[1]]
    if node.op == "nndct_depthwise_conv2d":
        groups = src.attrs.get("groups", w[0])
        return [w[0] // groups, w[2], w[3], groups]
    if node.op == "nndct_conv_transpose_2d":
        return [w[1], w[2], w[3], w[0]]
    if node.op == "nndct_depthwise_conv_transpose_2d":
        return [w[1], w[2], w[3], w[0]]
    return None


def deployable_graph(g: Graph) -> List[DevNode]:
    """nndct's deployable graph of a capture (container_payload.graph.nndct.capture with relu6_as_relu=True, as
    the Inspector's prepare_quantizable_module runs with equalization on; with nndct_names=True for nndct's node
    names), in nndct's node order, the graph's return last: DevNodes with NHWC shapes, nndct's attributes
    (filters.py's conventions), the node messages nndct's Inspector adds, and in attrs:
      input_nodes   the producer of each input tensor, aligned with in_shapes (None for a parameter): nndct's
                    in_tensors[i].node (parents leave parameters out)
      nndct_error   what vai_q_pytorch raises on this node, if it does (nndct_failure picks the one it meets
                    first); where that is in its filters, the node already has hostctl's verdict."""
    graph = _Graph(_build(g))
    cle = _cle_failure(graph)
    _strip_redundant_ops(graph)
    _update_op_attrs(graph)
    _constant_folding(graph)
    _layout_transform(graph)
    data = _update_shapes(graph)
    _adaptive_pool_to_pool(graph)
    for node in graph.nodes:
        if node.op == MULTIPLY and len(node.ins) > 1 and node.ins[1].node is None:
            # filter_eltwise reads in_tensors[1].node.op: a parameter has no node
            node.error = node.error or (_FILTER, "AttributeError: 'NoneType' object has no attribute 'op'")
    if data is not None:
        data[1].error = data[1].error or (_DATA, data[0])
    if cle is not None:
        cle[1].error = (_PARSE, cle[0])
    return _dev_nodes(graph)


# the stages of vai_q_pytorch's Inspector where it can fail, in its order: parsing (equalization), the data update
# after the layout transform, the filters, the node messages
_PARSE, _DATA, _FILTER, _MESSAGES = range(4)
_CLE = frozenset(("nndct_conv2d", "nndct_depthwise_conv2d", "nndct_conv_transpose_2d",
                  "nndct_depthwise_conv_transpose_2d", "nndct_conv3d", "nndct_depthwise_conv3d",
                  "nndct_conv_transpose_3d", "nndct_depthwise_conv_transpose_3d"))
_CLE_THROUGH = frozenset(("nndct_relu", "nndct_maxpool", "nndct_adaptive_avg_pool2d", "nndct_avgpool"))


def _cle_failure(graph: _Graph) -> Optional[Tuple[str, _Node]]:
    """nndct's equalization (on by default; nndct_shared/optimization/commander.py) fails on a depthwise conv
    with a channel multiplier above 1 and a bias that is the first conv of an equalized pair (the next conv
    reached through single-reader relus and pools): its weights, [in, kh, kw, multiplier] rows, do not broadcast
    with its bias, one row per output channel (_combine_weight_and_bias). The first such conv, in node order."""
    for node in graph.nodes:
        src = node.src
        if node.op not in ("nndct_depthwise_conv2d", "nndct_depthwise_conv_transpose_2d") or src is None or \
                src.weight is None or src.bias is None or src.weight.dim() != 4:
            continue
        w = src.weight.shape
        cin, mult = (w[0], w[1]) if "transpose" in node.op else (int(src.attrs.get("groups", 1)), w[0] // max(
            1, int(src.attrs.get("groups", 1))))
        if mult <= 1:
            continue
        nxt = node
        while True:
            children = nxt.children()
            if len(children) != 1:
                break
            nxt = children[0]
            if nxt.op not in _CLE_THROUGH:
                break
        if nxt is not node and nxt.op in _CLE:
            return ("ValueError: operands could not be broadcast together with shapes ({},1) ({},{}) ".format(
                cin * mult, cin, w[2] * w[3] * mult), node)
    return None


def _dev_nodes(graph: _Graph) -> List[DevNode]:
    out: List[DevNode] = []
    dev: Dict[int, DevNode] = {}
    for node in graph.nodes:
        attrs = _attrs_for_filters(node)
        attrs.update({k: v for k, v in node.attrs.items() if k not in attrs})
        d = DevNode(node.name, node.op, attrs,
                    in_shapes=[list(t.shape) if t.shape is not None else [] for t in node.ins],
                    out_shapes=[list(t.shape) if t.shape is not None else [] for t in node.outs],
                    weight_shape=_weight_shape(node))
        if node.op == PERMUTE and ("swim_transpose" in node.name or "sink_transpose" in node.name):
            order = tuple(node.attrs.get("order") or ())
            if order in _LAYOUT_MSG:
                d.messages.append(_MSG.format(_LAYOUT_MSG[order]))
            else:
                # nndct's Inspector has messages for 4-d permutes only and fails on others (KeyError)
                node.error = node.error or (_MESSAGES, "KeyError: {}".format(order))
                if order in _OTHER_LAYOUT_MSG:
                    d.messages.append(_MSG.format(_OTHER_LAYOUT_MSG[order]))
        if node.error:
            d.attrs["nndct_error"] = node.error[1]
            d.attrs["nndct_error_stage"] = node.error[0]
            if node.op == ADAPTIVE_AVG_POOL:
                d.device, d.constraint = "cpu", (
                    "The output size {} does not divide the input size {}: vai_q_pytorch cannot convert this adaptive "
                    "pool to a pool (its Inspector fails on it: AttributeError: KERNEL).".format(
                        node.outs[0].shape[1:3], node.ins[0].shape[1:3]))
        dev[id(node)] = d
        out.append(d)
    for node in graph.nodes:
        d = dev[id(node)]
        d.parents = [dev[id(p)] for p in node.parents()]
        # the user's line that made the op; a node nndct inserts (a layout permute) takes its neighbour's
        made_by = [node] if node.src is not None else node.parents() + node.children()
        d.attrs["source"] = next((m.src.source for m in made_by if m.src is not None and m.src.source), None)
        d.children = [dev[id(c)] for c in node.children()]
        d.attrs["input_nodes"] = [dev[id(t.node)] if t.node is not None else None for t in node.ins]
    return out


# hostctl's messages for the 3-d and 5-d permutes nndct inserts (its own Inspector fails on them)
_OTHER_LAYOUT_MSG = {(0, 2, 1): "between 'NCL' and 'NLC'", (0, 3, 4, 2, 1): "from 'NCDHW' to 'NHWDC'",
                     (0, 4, 3, 1, 2): "from 'NHWDC' to 'NCDHW'"}


def nndct_failure(nodes: Iterable[DevNode]) -> Optional[Tuple[str, str]]:
    """What vai_q_pytorch's rule-based Inspector raises on this graph and on which node, if it does: the first
    failure it meets (parsing, then its data update, its filters, its messages; in node order within each)."""
    failed = [(d.attr("nndct_error_stage"), i, d) for i, d in enumerate(nodes) if d.attr("nndct_error")]
    if not failed:
        return None
    _, _, d = min(failed, key=lambda f: (f[0], f[1]))
    return d.attr("nndct_error"), d.name
