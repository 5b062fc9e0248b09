"""What a DPU target can run, one predicate per op kind: vai_q_pytorch 3.5's rule-based inspector, rewritten.

Source (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch/pytorch_binding/pytorch_nndct/hardware/dpu_op_filter.py):
each filter takes a node of nndct's deployable graph (NHWC shapes) and the target, and answers (True, "") or
(False, the message nndct prints). The messages are quoted exactly, typos included ("alpa", "supporsed"), so
that inspect_<target>.txt and the terminal read as nndct's do. What nndct does that looks like a slip is kept
too, since it decides where a model runs, and said where it happens: check_stride compares the limit with
itself (no stride is ever refused), a max-reduce pool's height check names an undefined variable (nndct raises
NameError there: reported here as a CPU op with that error), the transposed depthwise filter ignores its
output-channel check.

Attribute conventions are nndct's: KERNEL, STRIDE and DILATION as [w, h], PAD as [left, right, top, bottom],
weights as [out_channels, kernel_h, kernel_w, in_channels].
"""

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .targets import Target, parse_range

Verdict = Tuple[bool, str]
DPU_LEAKY_ALPHA = 26.0 / 256

# NNDCT_OP values (nndct_shared/base/key_names.py)
CONV2D = "nndct_conv2d"
DEPTHWISE_CONV2D = "nndct_depthwise_conv2d"
CONVTRANSPOSE2D = "nndct_conv_transpose_2d"
DEPTHWISE_CONVTRANSPOSE2D = "nndct_depthwise_conv_transpose_2d"
CONV3D = "nndct_conv3d"
DEPTHWISE_CONV3D = "nndct_depthwise_conv3d"
CONVTRANSPOSE3D = "nndct_conv_transpose_3d"
DEPTHWISE_CONVTRANSPOSE3D = "nndct_depthwise_conv_transpose_3d"
AVG_POOL = "nndct_avgpool"
ADAPTIVEAVGPOOL2D = "nndct_adaptive_avg_pool2d"
MAX_POOL = "nndct_maxpool"
ADD = "nndct_elemwise_add"
MULTIPLY = "nndct_elemwise_mul"
PAD = "nndct_pad"
RESIZE = "nndct_resize"
HSIGMOID = "nndct_hsigmoid"
HSWISH = "nndct_hswish"
LEAKY_RELU = "nndct_leaky_relu"
CONST = "nndct_const"
TENSOR = "nndct_tensor"


@dataclass(eq=False)
class DevNode:
    """One node of nndct's deployable graph, as the filters and the partition read it."""

    name: str
    op: str  # NNDCT_OP type, e.g. "nndct_conv2d"
    attrs: Dict[str, Any] = field(default_factory=dict)
    in_shapes: List[List[int]] = field(default_factory=list)  # NHWC, one per input tensor
    out_shapes: List[List[int]] = field(default_factory=list)
    weight_shape: Optional[List[int]] = None  # [oc, kh, kw, ic]
    parents: List["DevNode"] = field(default_factory=list)  # in input order: parents[1] made in_shapes[1]
    children: List["DevNode"] = field(default_factory=list)
    device: Optional[str] = None  # "dpu" or "cpu" once allocated
    constraint: Optional[str] = None  # why it is on the CPU (nndct's filter message)
    messages: List[str] = field(default_factory=list)  # nndct's node messages (inserted permutes, ...)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


# -- checks shared by several filters ----------------------------------------------------------------------------

def _kernel(kernels: Sequence[int], limit: List[int]) -> Verdict:
    if any(k not in limit for k in kernels):
        return False, "'kernel'({} x {}) is not in DPU supported range({}).".format(kernels[0], kernels[1], limit)
    return True, ""


def _stride(strides: Sequence[int], limit: List[int]) -> Verdict:
    # nndct's check_stride tests `s not in stride_limit for s in stride_limit`: never true, so never refuses
    return True, ""


def _load_jump_write(ic: int, channel_parallel: int) -> Verdict:
    cp_limit = 256 * channel_parallel
    if ic > cp_limit:
        return False, "DPU only supports 'input_channel'({}) less than ({})".format(ic, cp_limit)
    return True, ""


def _save_jump_read(oc: int, channel_parallel: int) -> Verdict:
    cp_limit = 256 * channel_parallel
    if oc > cp_limit:
        return False, "DPU only support 'output_channel'({}) less than {}".format(oc, cp_limit)
    return True, ""


def _pad(pad: Sequence[int], kernel: Sequence[int]) -> Verdict:
    if any(p < 0 for p in pad):
        return False, "DPU only support non-negative 'pad'({})".format(list(pad))
    for i, (side, k) in enumerate((("pad_left", 0), ("pad_right", 0), ("pad_top", 1), ("pad_bottom", 1))):
        if pad[i] > kernel[k]:
            return False, "DPU only supports '{}'({}) less than 'kernel_width'({})".format(side, pad[i], kernel[k])
    return True, ""


def _pad_with_limit(pad: Sequence[int], kernel: Sequence[int], limit: Dict[str, List[int]]) -> Verdict:
    if any(p < 0 for p in pad):
        return False, "DPU only support non-negative 'pad'({})".format(list(pad))
    for i, (side, k) in enumerate((("pad_left", 0), ("pad_right", 0), ("pad_top", 1), ("pad_bottom", 1))):
        if limit.get(side):
            if pad[i] not in limit[side]:
                return False, "{}({}) is not in range.".format(side, pad[i])
        elif pad[i] > kernel[k]:
            return False, "DPU only supports {}({}) less than 'kernel'({}).".format(side, pad[i], kernel[k])
    return True, ""


def _weights_bank(target: Target, engine: Dict[str, Any], first: bool) -> Optional[Dict[str, Any]]:
    # conv: the first bank group of that name; depthwise: the last (nndct's two loops differ so)
    found = [g for g in target.get("bank_group", default=()) if g.get("name") == engine.get("weight_bank")]
    return (found[0] if first else found[-1]) if found else None


def _conv_weights_depth(target: Target, engine: Dict[str, Any], shape: Sequence[int]) -> Verdict:
    bank = _weights_bank(target, engine, first=True)
    if bank is None:
        return False, ("{}'s bank group configure is error, there's no weights bank for the engine.".format(
            target.name))
    _, k_h, k_w, k_ic = shape
    depth = k_w * k_h * math.ceil(k_ic * 1.0 / bank.get("bank_width", 0)) * math.ceil(
        engine.get("output_channel_parallel", 0) * 1.0 / bank.get("bank_num", 0))
    if depth > bank.get("bank_depth", 0):
        return False, ("Weights({}) is too large to be loaded into parameter buffer. 'kernel_h * kernel_w  *  "
                       "⌈input_channel / weights_bank_width⌉ * ⌈output_channel_parallel / weights_bank_num⌉({})' is "
                       "supporsed to be less equal than {}.".format(list(shape), depth, bank.get("bank_depth", 0)))
    return True, ""


def _dwconv_weights_depth(target: Target, engine: Dict[str, Any], shape: Sequence[int]) -> Verdict:
    bank = _weights_bank(target, engine, first=False)
    if bank is None:
        return False, ("{}'s bank group configure is error, there's no weights bank for the engine.".format(
            target.name))
    _, k_h, k_w, _ = shape
    depth = k_w * k_h * math.ceil(engine.get("channel_parallel", 0) * 1.0 / bank.get("bank_width", 0))
    if depth > bank.get("bank_depth", 0):
        return False, ("Weights({}) is too large to be loaded into parameter buffer. 'kernel_h * kernel_w  *  "
                       "input_channel' is supporsed to be less equal than {}.".format(
                           list(shape), bank.get("bank_depth", 0) * bank.get("bank_width", 0)))
    return True, ""


def _transposed_kernel(kernel: int, stride: int, limit: List[int]) -> Verdict:
    if not (kernel // stride in limit and (kernel % stride == 0 or (kernel // stride + 1) in limit)):
        return False, "'kernel / stride'({} / {}) is not in DPU supported range{}.".format(kernel, stride, limit)
    return True, ""


def _range(engine: Optional[Dict[str, Any]], limit: str, key: str, default: str) -> List[int]:
    text = ((engine or {}).get(limit) or {}).get(key)
    return parse_range(text or default)


def _pad_limits(engine: Dict[str, Any]) -> Dict[str, List[int]]:
    limits = engine.get("pad_limit") or {}
    return {side: parse_range(limits[side]) for side in ("pad_left", "pad_right", "pad_top", "pad_bottom")
            if limits.get(side)}


def _dilated(kernel: Sequence[int], dilation: Sequence[int]) -> List[int]:
    return [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]


def _then(*checks: Callable[[], Verdict]) -> Verdict:
    for check in checks:
        ok, msg = check()
        if not ok:
            return ok, msg
    return True, ""


# -- the filters ---------------------------------------------------------------------------------------------------

def filter_conv2d(node: DevNode, target: Target) -> Verdict:
    k, s, d, pad = (node.attr(a) for a in ("kernel", "stride", "dilation", "pad"))
    engine = target.get("conv_engine", default={})
    ih, iw, ic = node.in_shapes[0][1], node.in_shapes[0][2], node.in_shapes[0][3]
    whole = iw == k[0] and ih == k[1]
    return _then(lambda: _kernel(k, _range(engine, "conv_limit", "kernel_size", "1-16")),
                 lambda: _conv_weights_depth(target, engine, node.weight_shape),
                 lambda: (True, "") if whole else _stride(s, _range(engine, "conv_limit", "stride", "1-4")),
                 lambda: _load_jump_write(ic, engine.get("input_channel_parallel", 0)),
                 lambda: _pad(pad, _dilated(k, d)))


def _dw_engine(target: Target) -> Tuple[str, Dict[str, Any]]:
    if target.has("alu_engine"):
        return "alu", target.get("alu_engine")
    return "dwconv", target.get("dwconv_engine", default={})


def _has_dw_engine(target: Target) -> Verdict:
    if not (target.has("dwconv_engine") or target.has("alu_engine")):
        return False, "{} does not have depthwise-conv-engine.".format(target.name)
    return True, ""


def filter_depthwise_conv2d(node: DevNode, target: Target) -> Verdict:
    ok, msg = _has_dw_engine(target)
    if not ok:
        return ok, msg
    k, s, d, pad = (node.attr(a) for a in ("kernel", "stride", "dilation", "pad"))
    kind, engine = _dw_engine(target)
    limit_key = "alu_limit" if kind == "alu" else "dwconv_limit"
    kernel_limit = _range(engine, limit_key, "kernel_size", "1-16")
    stride_limit = _range(engine, limit_key, "stride", "1-4")
    pad_limit = _pad_limits(engine) if kind == "alu" else {}
    if kind == "dwconv" and target.type == "DPUCAHX8H" and s[0] > k[0]:
        return False, ("The stride_w({}) > kernel_w({}), but {} only support stride_w <= kernel_w.".format(
            s[0], k[0], target.name))
    ih, iw, ic = node.in_shapes[0][1], node.in_shapes[0][2], node.in_shapes[0][3]
    oc = node.out_shapes[0][3]
    cp = engine.get("channel_parallel", 0)
    dilated = _dilated(k, d)
    return _then(lambda: _kernel(k, kernel_limit),
                 lambda: (True, "") if (iw == k[0] and ih == k[1]) else _stride(s, stride_limit),
                 lambda: _load_jump_write(ic, cp),
                 lambda: _save_jump_read(oc, cp),
                 lambda: _dwconv_weights_depth(target, engine, node.weight_shape),
                 lambda: _pad_with_limit(pad, dilated, pad_limit) if pad_limit else _pad(pad, dilated))


def filter_transpose_conv2d(node: DevNode, target: Target) -> Verdict:
    k, s, pad = (node.attr(a) for a in ("kernel", "stride", "pad"))
    if any(p != 0 for p in node.attr("output_padding", (0, 0))):
        return False, "DPU does not support output_padding."
    engine = target.get("conv_engine", default={})
    limit = _range(engine, "conv_limit", "kernel_size", "1-16")
    cp = engine.get("input_channel_parallel", 0)
    return _then(lambda: _transposed_kernel(k[0], s[0], limit),
                 lambda: _transposed_kernel(k[1], s[1], limit),
                 lambda: _conv_weights_depth(target, engine, node.weight_shape),
                 lambda: _load_jump_write(node.in_shapes[0][3], cp),
                 lambda: _save_jump_read(node.out_shapes[0][3], cp),
                 lambda: _pad(pad, k))


def filter_transpose_depthwise_conv2d(node: DevNode, target: Target) -> Verdict:
    ok, msg = _has_dw_engine(target)
    if not ok:
        return ok, msg
    k, s, pad = (node.attr(a) for a in ("kernel", "stride", "pad"))
    if any(p != 0 for p in node.attr("output_padding", (0, 0))):
        return False, "DPU does not support output_padding."
    kind, engine = _dw_engine(target)
    limit_key = "alu_limit" if kind == "alu" else "dwconv_limit"
    kernel_limit = _range(engine, limit_key, "kernel_size", "1-16")
    pad_limit = _pad_limits(engine) if kind == "alu" else {}
    # nndct computes the output-channel check here and drops its result
    return _then(lambda: _transposed_kernel(k[0], s[0], kernel_limit),
                 lambda: _transposed_kernel(k[1], s[1], kernel_limit),
                 lambda: _load_jump_write(node.in_shapes[0][3], engine.get("channel_parallel", 0)),
                 lambda: _pad_with_limit(pad, k, pad_limit) if pad_limit else _pad(pad, k))


def _only_dpucvdx8g(node: DevNode, target: Target, output_padding: bool) -> Verdict:
    if target.type != "DPUCVDX8G":
        return False, "{} does not support {}. Only DPUCVDX8G support this.".format(target.name, node.op)
    if output_padding and any(p != 0 for p in node.attr("output_padding", (0, 0, 0))):
        return False, "DPU does not support output_padding."
    return True, ""


def filter_pool(node: DevNode, target: Target) -> Verdict:
    if not (target.has("pool_engine") or target.has("alu_engine")):
        return False, "{} does not have pool-engine.".format(target.name)
    k, s, pad = (node.attr(a) for a in ("kernel", "stride", "pad"))
    alu = target.get("alu_engine") if target.has("alu_engine") else None
    if alu is not None:
        kinds = alu.get("alu_type", ())
        has_max, has_avg, has_reduce = "max_pool" in kinds, "avg_pool" in kinds, "max_reduce" in kinds
    else:
        kinds = target.get("pool_engine", "pool_type", default=())
        has_max, has_avg, has_reduce = "max" in kinds, "avg" in kinds, "max_reduce" in kinds
    is_max = node.op == MAX_POOL
    if not ((is_max and (has_max or has_reduce)) or (node.op in (AVG_POOL, ADAPTIVEAVGPOOL2D) and has_avg)):
        return False, "{} does not support {}.".format(target.name, node.op)
    kernel_limit, stride_limit, pad_limit = parse_range("1-8"), parse_range("1-8"), {}
    if alu is not None:
        kernel_limit = _range(alu, "alu_limit", "kernel_size", "1-8")
        stride_limit = _range(alu, "alu_limit", "stride", "1-8")
        pad_limit = _pad_limits(alu)
    elif not is_max:
        if k[0] != k[1]:
            return False, ("DPU only supports avgpool with square kernel, but this op has kernel {} x {}.".format(
                k[0], k[1]))
        pool = target.get("pool_engine")
        kernel_limit = _range(pool, "avg_limit", "kernel_size", "1-8")
        stride_limit = _range(pool, "avg_limit", "stride", "1-8")
    else:
        pool = target.get("pool_engine")
        kernel_limit = _range(pool, "max_limit", "kernel_size", "1-8")
        stride_limit = _range(pool, "max_limit", "stride", "1-8")
    if is_max and has_reduce and k[0] not in kernel_limit:
        if k[0] > 100:
            return False, "'kernel_width'({}) is not in DPU supported range [1, 100]".format(k[0])
        # nndct: `if ksize[1] < 1 or ksizse[1] > 2` -> NameError unless the height is below 1
        if k[1] < 1:
            return False, "'kernel_height'({}) is not in DPU supported range [1, 2]".format(k[1])
        return False, "NameError: name 'ksizse' is not defined (vai_q_pytorch's filter_pool fails on this pool)"
    ih, iw = node.in_shapes[0][1], node.in_shapes[0][2]
    return _then(lambda: _kernel(k, kernel_limit),
                 lambda: (True, "") if not (iw != k[0] or ih != k[1]) else _stride(s, stride_limit),
                 lambda: _pad_with_limit(pad, k, pad_limit) if pad_limit else _pad(pad, k))


def filter_eltwise(node: DevNode, target: Target) -> Verdict:
    msg = ""
    # the producer of the second input tensor (None for a parameter), as nndct reads it; parents where not given
    inputs = node.attr("input_nodes") or node.parents
    const = inputs[1] if len(inputs) > 1 else None
    if node.op == MULTIPLY and const is not None and const.op in (CONST, TENSOR):
        prefix = "Try to convert mul to DepthwiseConv2d failed."
        ok, check = _mul_as_dwconv(node)
        if not ok:
            msg = prefix + check
        else:
            as_dw = _as_depthwise_1x1(node)
            ok, check = filter_depthwise_conv2d(as_dw, target)
            if ok:
                return True, ""
            msg = prefix + check
    if not target.has("eltwise_engine"):
        return False, msg + "{} does not have eltwise-engine".format(target.name)
    kinds = target.get("eltwise_engine", "elew_type", default=())
    if node.op == ADD:
        if "add" not in kinds:
            return False, "{} does not support eltwise ADD.".format(target.name)
    elif node.op == MULTIPLY:
        if "mult" not in kinds:
            return False, msg + "{} does not support eltwise MUL.".format(target.name)
    else:
        return False, "{} does not support {}.".format(target.name, node.op)
    return True, msg


def _mul_as_dwconv(node: DevNode) -> Verdict:
    """nndct's check_dim_of_inputs_of_mul: a mul by a constant vector along channels is a 1x1 depthwise conv."""
    shape = node.in_shapes[0]
    data = (node.attr("input_nodes") or node.parents)[1].attr("data")
    const_shape = _shape_of(data if isinstance(data, list) else [data])
    if not (len(shape) <= 4 and len(const_shape) == 1 and (shape[-1] == const_shape[0] or const_shape[0] == 1)):
        return False, ("mul's input  has the tensor dimension {} and weights has the tensor dimenstion {}.".format(
            list(shape), tuple(const_shape)))
    return True, ""


def _shape_of(data: Any) -> List[int]:
    shape = []
    while isinstance(data, (list, tuple)):
        shape.append(len(data))
        data = data[0] if data else None
    return shape


def _as_depthwise_1x1(node: DevNode) -> DevNode:
    shape = [1] * (4 - len(node.in_shapes[0])) + list(node.in_shapes[0])
    return DevNode(node.name, DEPTHWISE_CONV2D, {"kernel": [1, 1], "stride": [1, 1], "dilation": [1, 1],
                                                 "pad": [0, 0, 0, 0]},
                   [shape], [shape], weight_shape=[1, 1, 1, shape[-1]])


def filter_upsample(node: DevNode, target: Target) -> Verdict:
    msg, ok = "", True
    if node.attr("mode") == "BILINEAR":
        prefix = "Try to convert BlinearUpsamle2d to transpose depthwise conv2d failed."
        ok, check = _bilinear_scale(node)
        if not ok:
            msg = prefix + check
        else:
            ok, check = filter_transpose_depthwise_conv2d(_as_transpose_dwconv(node), target)
            if ok:
                return True, ""
            msg = prefix + check
    if node.attr("align_corners"):
        return False, "DPU does not support align_corners = True"
    if node.attr("mode") == "BILINEAR":
        # nndct returns the verdict of its last check here, with this message appended
        return ok, msg + "DPU does not support {} mode.(only support NEAREST mode).".format(node.attr("mode"))
    return _load_jump_write(node.in_shapes[0][3], target.get("load_engine", "channel_parallel", default=0))


def _bilinear_scale(node: DevNode) -> Verdict:
    (_, i_h, i_w, _), (_, o_h, o_w, _) = node.in_shapes[0], node.out_shapes[0]
    scale_f = [float(o_w) / float(i_w), float(o_h) / float(i_h)]
    allowed = [2, 4] if node.attr("half_pixel_centers") else [2, 4, 8]
    for s in scale_f:
        if not (math.ceil(s) == s and any(a == s for a in allowed)):
            return False, "{} output / input scale is {}".format(node.op, scale_f)
    scale = [int(s) for s in scale_f]
    if scale[0] != scale[1]:
        return False, "scale_w is not equal with scale_h"
    ok, msg = _bilinear_weights_fit(node, scale[1], scale[0])
    if ok:
        node.attrs["scale"] = [float(scale[0]), float(scale[1])]
    return ok, msg


def _bilinear_weights_fit(node: DevNode, scale_h: int, scale_w: int) -> Verdict:
    """nndct's check_bilinear_upsample_fake_weight: the interpolation weights must be exact at 8 bits."""
    kernel_h, kernel_w = 2 * scale_h, 2 * scale_w
    if node.attr("half_pixel_centers"):
        h_s, w_s, scale2pos = math.ceil(scale_h * 0.5 - 0.5), math.ceil(scale_w * 0.5 - 0.5), {2: 4, 4: 6}
    else:
        h_s, w_s, scale2pos = 0, 0, {2: 2, 4: 4, 8: 6}
    weights = [0.0] * (kernel_h * kernel_w)  # one channel: every channel gets the same weights
    for j in range(h_s, scale_h + h_s):
        for i in range(w_s, scale_w + w_s):
            fx = (i + 0.5) / scale_w - 0.5
            fx -= math.floor(fx)
            fy = (j + 0.5) / scale_h - 0.5
            fy -= math.floor(fy)
            right, left = kernel_w - 1 - i + w_s, kernel_w - 1 - scale_w - i + w_s
            bottom, top = kernel_h - 1 - j + h_s, kernel_h - 1 - scale_h - j + h_s
            weights[top * kernel_w + left] = (1 - fx) * (1 - fy)
            weights[top * kernel_w + right] = fx * (1 - fy)
            weights[bottom * kernel_w + left] = (1 - fx) * fy
            weights[bottom * kernel_w + right] = fx * fy

    def fits(v: float) -> bool:
        fixed = v * (2 ** scale2pos[scale_h])
        return not (fixed > 255 or fixed < 0 or (fixed == 0 and v != 0))

    if node.in_shapes[0][3] and not all(fits(w) for w in weights):
        return False, "weights fixed data out of range."
    return True, ""


def _as_transpose_dwconv(node: DevNode) -> DevNode:
    """nndct's create_transpose_dwconv2d_from_bilinear_upsample: kernel 2*scale, stride scale, pads from it."""
    scale_w, scale_h = (int(s) for s in node.attrs["scale"])
    (_, i_h, i_w, _), (_, o_h, o_w, _) = node.in_shapes[0], node.out_shapes[0]
    kernel_h, kernel_w = 2 * scale_h, 2 * scale_w
    if node.attr("half_pixel_centers"):
        pad_l = int(math.floor(float(scale_w) / 2.0 - 0.5))
        pad_r = o_w + kernel_w - 2 - (i_w + 1) * scale_w - pad_l
        pad_t = int(math.floor(float(scale_h) / 2.0 - 0.5))
        pad_b = o_h + kernel_h - 2 - (i_h + 1) * scale_h - pad_t
    else:
        pad_l = pad_r = scale_w - 1
        pad_t = pad_b = scale_h - 1
    pad = [kernel_w - 1 - pad_l, kernel_w - 1 - pad_r, kernel_h - 1 - pad_t, kernel_h - 1 - pad_b]
    return DevNode(node.name, DEPTHWISE_CONVTRANSPOSE2D,
                   {"kernel": [kernel_h, kernel_w], "stride": [scale_h, scale_w], "pad": pad, "dilation": [1, 1],
                    "output_padding": [0, 0]}, node.in_shapes, node.out_shapes)


def filter_pad(node: DevNode, target: Target) -> Verdict:
    if node.attr("mode") not in (0, 2):  # CONSTANT or SYMMETRIC
        return False, "DPU only support CONSTANT or SYMMETRIC mode."
    return _load_jump_write(node.in_shapes[0][3], target.get("load_engine", "channel_parallel", default=0))


def filter_hard_sigmoid(node: DevNode, target: Target) -> Verdict:
    if not target.has("alu_engine"):
        return False, "This target does not support single hard-sigmoid."
    return True, ""


def filter_leaky_relu(node: DevNode, target: Target) -> Verdict:
    alpha = node.attr("alpha")
    if alpha != DPU_LEAKY_ALPHA:
        return False, "Its alpa is {}, but DPU only support {}.".format(alpha, DPU_LEAKY_ALPHA)
    return True, ""


FILTERS: Dict[str, Callable[[DevNode, Target], Verdict]] = {
    AVG_POOL: filter_pool,
    ADAPTIVEAVGPOOL2D: filter_pool,
    CONVTRANSPOSE2D: filter_transpose_conv2d,
    CONV2D: filter_conv2d,
    DEPTHWISE_CONV2D: filter_depthwise_conv2d,
    ADD: filter_eltwise,
    MULTIPLY: filter_eltwise,
    MAX_POOL: filter_pool,
    PAD: filter_pad,
    CONV3D: lambda n, t: _only_dpucvdx8g(n, t, output_padding=False),
    DEPTHWISE_CONV3D: lambda n, t: _only_dpucvdx8g(n, t, output_padding=False),
    RESIZE: filter_upsample,
    CONVTRANSPOSE3D: lambda n, t: _only_dpucvdx8g(n, t, output_padding=True),
    HSIGMOID: filter_hard_sigmoid,
    HSWISH: filter_hard_sigmoid,
    DEPTHWISE_CONVTRANSPOSE2D: filter_transpose_depthwise_conv2d,
    DEPTHWISE_CONVTRANSPOSE3D: lambda n, t: _only_dpucvdx8g(n, t, output_padding=True),
    LEAKY_RELU: filter_leaky_relu,
}
