"""Which device runs each node of the deployable graph, and the DPU and CPU subgraphs that makes.

Source: vai_q_pytorch 3.5's rule-based inspector (pytorch_nndct/hardware/dpu_partition.py
`simple_allocate_op_device`, dpu_op_filter.py `pattern_filters`, inspector.py
`_get_subgraphs_and_output_boundaries`). One pass allocates: nodes outside the quantizable part and op types
that XIR cannot take go to the CPU, ops the DPU never runs too, the rest by their filter (filters.py) or to the
DPU. Graph inputs follow their children. Two pattern passes then adjust: a permute before flatten/reshape and a
dense goes where the dense goes (nndct merges it into the matmul), and a reshape at the DPU's edge that changes
the first dimension goes to the CPU.
"""

from typing import Callable, Dict, Iterable, List, Optional

from .filters import FILTERS, DevNode
from .targets import Target

DPU, CPU = "dpu", "cpu"

INPUT = "nndct_input"
RETURN = "nndct_return"
PERMUTE = "nndct_permute"
FLATTEN = "nndct_flatten"
RESHAPE = "nndct_reshape"
DENSE = "nndct_dense"

# DPUPartition._cpu_only_xir_type
CPU_ONLY = frozenset((
    "nndct_permute", "nndct_sigmoid", "nndct_tanh", "nndct_hardtanh", "nndct_sum", "nndct_strided_slice",
    "nndct_neg", "nndct_elemwise_exp", "nndct_elementwise_sub", "nndct_elemwise_div", "nndct_rsub"))
# DPUPartition._supported_nndct_type: what nndct can convert to XIR at all
SUPPORTED = frozenset((
    "nndct_input", "nndct_conv2d", "nndct_depthwise_conv2d", "nndct_conv_transpose_2d", "nndct_avgpool",
    "nndct_adaptive_avg_pool2d", "nndct_maxpool", "nndct_relu", "nndct_leaky_relu", "nndct_tanh", "nndct_sigmoid",
    "nndct_dense", "nndct_matmul", "nndct_reshape", "nndct_elemwise_add", "nndct_flatten", "nndct_concat",
    "nndct_elemwise_mul", "nndct_strided_slice", "nndct_rsub", "nndct_elementwise_sub", "nndct_pad",
    "nndct_resize", "nndct_softmax", "nndct_permute", "nndct_const", "nndct_tensor", "nndct_relu6", "nndct_mean",
    "nndct_batch_norm", "nndct_quant_stub", "nndct_max", "nndct_transpose", "nndct_squeeze", "nndct_zeros",
    "nndct_neg", "nndct_elemwise_div", "nndct_sum", "nndct_hsigmoid", "nndct_hswish", "nndct_pixel_shuffle",
    "nndct_pixel_unshuffle", "nndct_conv3d", "nndct_depthwise_conv3d", "nndct_conv_transpose_3d",
    "nndct_depthwise_conv_transpose_3d", "nndct_resize_3d", "nndct_depthwise_conv_transpose_2d"))


def allocate(nodes: List[DevNode], target: Target) -> None:
    """Set device and constraint on every node but the graph's return, as nndct's partition does."""
    for node in nodes:
        if not node.parents or node.device is not None:
            continue
        if node.attr("in_quant_part") is False:
            _cpu(node, "Not in quantizable part.")
        elif node.op not in SUPPORTED:
            _cpu(node, "{} can't be converted to XIR.".format(node.op))
        elif node.op in CPU_ONLY:
            _cpu(node, "DPU does not support {}".format(node.op))
        elif node.op in FILTERS:
            ok, msg = FILTERS[node.op](node, target)
            if ok:
                node.device = DPU
            else:
                _cpu(node, msg)
        else:
            node.device = DPU
    for node in nodes:
        if node.parents:
            continue
        if node.attr("in_quant_part") is False:
            _cpu(node, "Not in quantizable part.")
        elif any(c.device == DPU for c in node.children):
            if node.op in SUPPORTED:
                node.device = DPU
            else:
                _cpu(node, "{} can't be converted to XIR.".format(node.op))
        else:
            _cpu(node, "All the children nodes are assigned to CPU.")
    _permute_before_dense(nodes)
    _reshape_at_dpu_edge(nodes)


def _cpu(node: DevNode, message: str) -> None:
    node.device, node.constraint = CPU, message


def _permute_before_dense(nodes: Iterable[DevNode]) -> None:
    """merge_permute_to_matmul: [permute, flatten|reshape, dense] with the permute NHWC -> NCHW."""
    for permute in nodes:
        if permute.op != PERMUTE or permute.device == DPU or permute.attr("order") != [0, 3, 1, 2]:
            continue
        for middle in permute.children:
            if middle.op not in (FLATTEN, RESHAPE):
                continue
            dense = next((d for d in middle.children if d.op == DENSE and d.device is not None), None)
            if dense is not None:
                permute.device, permute.constraint = dense.device, None
                break


def _reshape_at_dpu_edge(nodes: Iterable[DevNode]) -> None:
    """filter_dpu_interface_reshape: a reshape on the DPU that reads from or feeds the CPU may not change dim 0."""
    for node in nodes:
        if node.op not in (RESHAPE, FLATTEN) or node.device != DPU or not node.parents:
            continue
        source = node.parents[0]
        inside = source.device == DPU and all(c.device == DPU for c in node.children if c.op != RETURN)
        if not inside and source.out_shapes[0][0] != node.out_shapes[0][0]:
            _cpu(node, "First dimension is changed.")


def subgraphs(nodes: List[DevNode]) -> Dict[str, List[List[DevNode]]]:
    """The DPU and CPU subgraphs of the allocated graph, counted as nndct's Inspector counts them (below)."""
    shown = [n for n in nodes if n.op != RETURN]
    index = {id(n): i for i, n in enumerate(shown)}
    groups = count_subgraphs(len(shown), lambda i: shown[i].device,
                             lambda i: [index[id(p)] if id(p) in index else None for p in shown[i].parents],
                             lambda i: [index[id(c)] for c in shown[i].children if id(c) in index])
    return {device: [[shown[i] for i in group] for group in found] for device, found in groups.items()}


def count_subgraphs(size: int, device: Callable[[int], Optional[str]],
                    parents: Callable[[int], List[Optional[int]]],
                    children: Callable[[int], List[int]]) -> Dict[str, List[List[int]]]:
    """nndct's Inspector's subgraphs of nodes 0..size-1 (in graph order), per device (hardware/inspector.py
    _get_subgraphs_and_output_boundaries): every source of a device (a node without inputs, or whose inputs all
    run on other devices) in order collects what it reaches down through that device's nodes; a node keeps the
    number of the first source that reached it; each source's set then joins the set numbered by the smallest
    number among its nodes. That join is not transitive (set C may join B's number while B joined A's), so on
    some graphs the count is above the connected parts (timm's nf_resnet26 on DPUCZDX8G_ISA1_B4096: 54, not 50).
    A parent of None (a parameter) has no device: a node reading one is no source, as in nndct."""
    out: Dict[str, List[List[int]]] = {DPU: [], CPU: []}
    for dev in (DPU, CPU):
        members = [i for i in range(size) if device(i) == dev]
        inside = set(members)
        first: Dict[int, int] = {}
        reached: List[List[int]] = []
        for i in members:
            ins = parents(i)
            if ins and not all(p is not None and device(p) is not None and device(p) != dev for p in ins):
                continue
            number, todo, seen = len(reached), [i], {i}
            while todo:
                n = todo.pop()
                first.setdefault(n, number)
                for c in children(n):
                    if c in inside and c not in seen:
                        seen.add(c)
                        todo.append(c)
            reached.append(sorted(seen))
        merged: Dict[int, set] = {}
        for group in reached:
            merged.setdefault(min(first[n] for n in group), set()).update(group)
        out[dev] = [sorted(group) for group in merged.values()]
    return out
