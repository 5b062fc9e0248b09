"""Which device runs each node of the deployable graph, and the DPU and CPU subgraphs that makes.

Source: vai_q_pytorch 3.5's rule-based inspector (pytorch_nndct/hardware/dpu_partition.py
`simple_allocate_op_device`, dpu_op_filter.py `pattern_filters`, inspector.py
`_get_subgraphs_and_output_boundaries`). One pass allocates: nodes outside the quantizable part and op types
that XIR cannot take go to the CPU, ops the DPU never runs too, the rest by their filter (filters.py) or to the
DPU. Graph inputs follow their children. Two pattern passes then adjust: a permute before flatten/reshape and a
dense goes where the dense goes (nndct merges it into the matmul), and a reshape at the DPU's edge that changes
the first dimension goes to the CPU.
"""

from typing import Dict, Iterable, List

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
    """The connected runs of nodes on one device, per device: how many DPU subgraphs the model compiles into."""
    out: Dict[str, List[List[DevNode]]] = {DPU: [], CPU: []}
    seen = set()
    for node in nodes:
        if node.op == RETURN or id(node) in seen or node.device is None:
            continue
        group, todo = [], [node]
        seen.add(id(node))
        while todo:
            n = todo.pop()
            group.append(n)
            for m in n.parents + n.children:
                if id(m) not in seen and m.device == node.device and m.op != RETURN:
                    seen.add(id(m))
                    todo.append(m)
        out[node.device].append(sorted(group, key=nodes.index))
    return out
