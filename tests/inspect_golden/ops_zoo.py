"""Small op models for the inspection references: together they reach every filter of vai_q_pytorch 3.5's rule-based
Inspector (pytorch_nndct/hardware/dpu_op_filter.py) and the op types its partition sends to the CPU outright.

Each model is named after what it exercises. Most are a `Probe`: a stem conv, the op under test, a 1x1 head conv,
so that the op sits inside what the DPU can reach and nndct's verdict is about the op, not about the graph's edges;
models that test channel counts or spatial extents apply the op to the input directly. Weights come from
tests/golden/zoo.py's numpy streams (zoo.init_deterministic), inputs likewise (`inputs`), so both sides rebuild the
same models under any torch >= 1.13. Batch 1: nndct's "First dimension is changed" check on reshapes reads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import zoo  # noqa: E402

SEED = zoo.SEED
BATCH = 1


class Fn(nn.Module):
    """A functional op as a module, so that it gets a scope of its own in nndct's node names (`Fn[op]`)."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Probe(nn.Module):
    """stem conv 3x3 (cin -> mid) -> op -> head conv 1x1 (op_out -> mid); stem or head may be left out."""

    def __init__(self, op: nn.Module, cin: int = 3, mid: int = 8, op_out: int | None = None, stem: bool = True,
                 head: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(cin, mid, 3, padding=1) if stem else nn.Identity()
        self.op = op
        self.head = nn.Conv2d(op_out or mid, mid, 1) if head else nn.Identity()

    def forward(self, x):
        return self.head(self.op(self.stem(x)))


class Pair(nn.Module):
    """Two convs of the same input joined by a binary op: conv_a(x) <op> conv_b(x)."""

    def __init__(self, fn: Callable, cin: int = 3, mid: int = 8):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, mid, 3, padding=1)
        self.conv_b = nn.Conv2d(cin, mid, 3, padding=1)
        self.fn = fn
        self.head = nn.Conv2d(mid, mid, 1)

    def forward(self, x):
        return self.head(self.fn(self.conv_a(x), self.conv_b(x)))


class Conv3dFamily(nn.Module):
    """Conv3d, depthwise Conv3d (filter_conv3d / filter_depthwise_conv3d: DPUCVDX8G only)."""

    def __init__(self, transposed: bool = False, output_padding: bool = False):
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 3, padding=1)
        if transposed:
            self.conv = nn.ConvTranspose3d(8, 8, 2, stride=2)
            self.depthwise = nn.ConvTranspose3d(8, 8, 2, stride=2, groups=8)
        else:
            self.conv = nn.Conv3d(8, 8, 3, padding=1)
            self.depthwise = nn.Conv3d(8, 8, 3, padding=1, groups=8)
        self.extra = nn.ConvTranspose3d(8, 8, 3, stride=2, padding=1, output_padding=1) if output_padding else None

    def forward(self, x):
        y = self.depthwise(self.conv(self.stem(x)))
        return self.extra(y) if self.extra is not None else y


class MulParamVector(nn.Module):
    """features [N, C] * a [C] parameter (a layer-scale): nndct's filter_eltwise reads the parameter's producer node,
    which a parameter does not have."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.scale = nn.Parameter(torch.ones(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stem(x)), 1) * self.scale)


class MulParamNCHW(nn.Module):
    """x [N, C, H, W] * a [1, C, 1, 1] parameter (a layer-scale)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.head(self.stem(x) * self.scale)


class MulConst(nn.Module):
    """A mul by a tensor constant written in forward (a const node): nndct tries to turn it into a depthwise conv,
    which needs a 1-d const as long as the channels ("vector", after flatten) and refuses a [1, C, 1, 1] one."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        if self.how == "vector":
            return self.fc(torch.flatten(self.pool(self.stem(x)), 1) * torch.tensor([0.125 * i for i in range(1, 9)]))
        return self.head(self.stem(x) * torch.tensor([0.125 * i for i in range(1, 9)]).reshape(1, 8, 1, 1))


class Head(nn.Module):
    """A classifier head: conv, pool, then flatten or reshape, then Linear (nndct inserts a permute before them)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1) if how != "reshape_spatial" else nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 if how != "reshape_spatial" else 32, 10)

    def forward(self, x):
        y = self.pool(self.stem(x))
        if self.how == "flatten":
            y = torch.flatten(y, 1)
        else:
            y = y.reshape(y.shape[0], -1)
        return self.fc(y)


class ReshapeOut(nn.Module):
    """A reshape at the graph's output that changes the first dimension (filter_dpu_interface_reshape)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.stem(x)
        return y.reshape(-1, y.shape[-1])


class ReshapeInternal(nn.Module):
    """conv -> view [N, C, H*W] -> view back -> conv: a reshape between DPU ops."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.stem(x)
        n, c, h, w = y.shape
        return self.head(y.reshape(n, c, h * w).reshape(n, c, h, w))


class Concat(nn.Module):
    """torch.cat along channels: of two convs, of the input and a conv, or of a CPU op and a conv."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(11 if how == "input" else 16, 8, 1)

    def forward(self, x):
        if self.how == "input":
            y = torch.cat([x, self.conv_a(x)], 1)
        elif self.how == "after_cpu":
            y = torch.cat([torch.sigmoid(self.conv_a(x)), self.conv_b(x)], 1)
        else:
            y = torch.cat([self.conv_a(x), self.conv_b(x)], 1)
        return self.head(y)


class PermuteExplicit(nn.Module):
    """A permute written in the model: NCHW -> NHWC, then a Linear over channels (the token-mixer idiom)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.stem(x).permute(0, 2, 3, 1))


def _conv(cin, cout, k, **kw) -> Callable[[], nn.Module]:
    return lambda: Probe(nn.Conv2d(cin, cout, k, **kw), mid=cin, op_out=cout)


def _direct(op: Callable[[], nn.Module], cout: int | None = None) -> Callable[[], nn.Module]:
    """The op straight on the input (no stem), then a 1x1 head conv unless cout is None."""
    return lambda: Probe(op(), stem=False, head=cout is not None, op_out=cout, mid=8)


def _probe(op: Callable[[], nn.Module], mid: int = 8, op_out: int | None = None) -> Callable[[], nn.Module]:
    return lambda: Probe(op(), mid=mid, op_out=op_out)


def _up(mode: str, scale, align_corners=None) -> Callable[[], nn.Module]:
    return _probe(lambda: Fn(lambda x: F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align_corners)))


S = (3, 16, 16)  # the default input: [1, 3, 16, 16]

# name -> (builder, input size without the batch)
OPS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    # --- filter_conv2d: kernel range, weights bank depth, stride range, input channels, pad against kernel ---
    "conv_k3_baseline": (_conv(8, 8, 3, padding=1), S),
    "conv_kernel16": (_conv(8, 8, 16, padding=8), (3, 32, 32)),
    "conv_kernel17": (_conv(8, 8, 17, padding=8), (3, 32, 32)),  # 17 > conv_limit 1-16
    "conv_stride8": (_conv(8, 8, 3, stride=8, padding=1), (3, 32, 32)),  # vs conv_limit stride 1-8 / 1-4
    "conv_dilation2": (_conv(8, 8, 3, dilation=2, padding=2), S),
    "conv_pad_equals_kernel": (_conv(8, 8, 3, padding=3), S),  # pad 3 == kernel 3
    "conv_pad_left_over_kernel": (_conv(8, 8, 3, padding=4), S),  # pad 4 > kernel 3
    "conv_pad_top_over_kernel": (_conv(8, 8, 3, padding=(4, 1)), S),  # pad_top 4 > kernel 3
    "conv_dilated_pad_over_kernel": (_conv(8, 8, 3, dilation=2, padding=6), S),  # pad 6 > dilated kernel 5
    "conv_wide_1024x5x5x1024": (_direct(lambda: nn.Conv2d(1024, 1024, 5, padding=2), 1024), (1024, 8, 8)),
    "conv_input_channels_4104": (_direct(lambda: nn.Conv2d(4104, 8, 1), 8), (4104, 2, 2)),  # > 256 * channel_parallel
    # --- filter_depthwise_conv2d: engine, kernel, weights bank depth, channels, pad_limit ---
    "depthwise_k3": (_probe(lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8)), S),
    "depthwise_stride2": (_probe(lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)), S),
    "depthwise_k17_pad16": (_probe(lambda: nn.Conv2d(8, 8, 17, padding=16, groups=8)), (3, 32, 32)),  # pad_limit 0-15
    "depthwise_k48_bank_depth": (_direct(lambda: nn.Conv2d(16, 16, 48, groups=16), 16), (16, 48, 48)),
    "depthwise_channels_2056": (_direct(lambda: nn.Conv2d(2056, 2056, 3, padding=1, groups=2056), 2056),
                                (2056, 4, 4)),  # 2056 > 256 * channel_parallel on B512
    "depthwise_multiplier2_2200": (_direct(lambda: nn.Conv2d(1100, 2200, 3, padding=1, groups=1100), 2200),
                                   (1100, 4, 4)),  # channel multiplier 2: nndct itself fails on it
    # --- filter_transpose_conv2d / filter_transpose_depthwise_conv2d ---
    "convtranspose_k4s2": (_probe(lambda: nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)), S),
    "convtranspose_output_padding": (_probe(lambda: nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1,
                                                                       output_padding=1)), S),
    "convtranspose_k34s2": (_probe(lambda: nn.ConvTranspose2d(8, 8, 34, stride=2, padding=16)), S),  # 34 / 2 > 16
    "convtranspose_pad_over_kernel": (_probe(lambda: nn.ConvTranspose2d(8, 8, 3, stride=1, padding=4)), S),
    "convtranspose_wide_1024_k6s2": (_direct(lambda: nn.ConvTranspose2d(1024, 16, 6, stride=2, padding=2), 16),
                                     (1024, 4, 4)),
    "convtranspose_output_channels_2056": (_probe(lambda: nn.ConvTranspose2d(8, 2056, 2, stride=2), op_out=2056),
                                           S),  # 2056 > 256 * input_channel_parallel on B512
    "convtranspose_depthwise_k4s2": (_probe(lambda: nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=8)), S),
    "convtranspose_depthwise_output_padding": (_probe(lambda: nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1,
                                                                                 output_padding=1, groups=8)), S),
    # --- filter_conv3d, filter_depthwise_conv3d, filter_transpose_conv3d, filter_transpose_depthwise_conv3d ---
    "conv3d": (lambda: Conv3dFamily(), (3, 4, 8, 8)),
    "convtranspose3d": (lambda: Conv3dFamily(transposed=True), (3, 4, 8, 8)),
    "convtranspose3d_output_padding": (lambda: Conv3dFamily(transposed=True, output_padding=True), (3, 4, 8, 8)),
    # --- filter_pool: engine pool types, kernel/stride limits, square avg kernels, max_reduce, pad_limit ---
    "maxpool_k3s2": (_probe(lambda: nn.MaxPool2d(3, stride=2, padding=1)), S),
    "maxpool_k2s2": (_probe(lambda: nn.MaxPool2d(2)), S),
    "avgpool_k2s2": (_probe(lambda: nn.AvgPool2d(2)), S),
    "maxpool_k9": (_probe(lambda: nn.MaxPool2d(9, stride=1)), S),  # pool_engine max_limit 1-8
    "avgpool_k9": (_probe(lambda: nn.AvgPool2d(9, stride=1)), S),
    "maxpool_stride16": (_probe(lambda: nn.MaxPool2d(2, stride=16)), (3, 32, 32)),
    "avgpool_nonsquare_3x2": (_probe(lambda: nn.AvgPool2d((2, 3), stride=1)), S),
    "maxpool_k33_pad16": (_probe(lambda: nn.MaxPool2d(33, stride=1, padding=16)), (3, 33, 33)),  # pad_limit 0-15
    "maxpool_kernel_w300": (_direct(lambda: nn.MaxPool2d((1, 300)), 4), (4, 2, 300)),  # max_reduce: width <= 100
    "avgpool_kernel_w300": (_direct(lambda: nn.AvgPool2d((1, 300)), 4), (4, 2, 300)),  # alu_limit 1-256
    "avgpool_global": (_probe(lambda: nn.AdaptiveAvgPool2d(1)), S),
    "adaptive_avgpool_divides_4": (_probe(lambda: nn.AdaptiveAvgPool2d(4)), S),  # 16 -> 4: avgpool 4x4 stride 4
    "adaptive_avgpool_not_divides_3": (_probe(lambda: nn.AdaptiveAvgPool2d(3)), S),  # 16 -> 3: nndct raises
    "adaptive_maxpool_4": (_probe(lambda: nn.AdaptiveMaxPool2d(4)), S),
    # --- filter_upsample: nearest, bilinear turned into a transposed depthwise conv (scales 2/4/8), align_corners ---
    "resize_nearest_x2": (_up("nearest", 2.0), S),
    "resize_nearest_x16": (_up("nearest", 16.0), (3, 4, 4)),
    "resize_nearest_wide_2056": (_direct(lambda: nn.Upsample(scale_factor=2.0, mode="nearest"), 2056), (2056, 2, 2)),
    "resize_bilinear_x2": (_up("bilinear", 2.0, False), S),
    "resize_bilinear_x4": (_up("bilinear", 4.0, False), S),
    "resize_bilinear_x8": (_up("bilinear", 8.0, False), (3, 8, 8)),
    "resize_bilinear_x16": (_up("bilinear", 16.0, False), (3, 4, 4)),
    "resize_bilinear_x2_align_corners": (_up("bilinear", 2.0, True), S),
    "resize_bilinear_x8_align_corners": (_up("bilinear", 8.0, True), (3, 8, 8)),
    "resize_bilinear_x2x4": (_up("bilinear", (2.0, 4.0), False), S),  # scale_w != scale_h
    # --- filter_eltwise and the CPU-only binary ops ---
    "eltwise_add": (lambda: Pair(torch.add), S),
    "eltwise_mul": (lambda: Pair(torch.mul), S),
    "eltwise_sub": (lambda: Pair(torch.sub), S),
    "eltwise_div": (lambda: Pair(torch.div), S),
    "mul_scalar": (_probe(lambda: Fn(lambda x: x * 0.5)), S),
    "mul_const_vector": (lambda: MulConst("vector"), S),
    "mul_const_nchw": (lambda: MulConst("nchw"), S),
    "mul_param_vector": (lambda: MulParamVector(), S),  # nndct raises
    "mul_param_nchw": (lambda: MulParamNCHW(), S),  # nndct raises
    "rsub_scalar": (_probe(lambda: Fn(lambda x: 1.0 - x)), S),
    # --- activations: filter_hard_sigmoid, filter_leaky_relu, CPU-only and unconvertible types ---
    "act_relu": (_probe(lambda: nn.ReLU()), S),
    "act_relu6": (_probe(lambda: nn.ReLU6()), S),
    "act_prelu": (_probe(lambda: nn.PReLU(8)), S),
    "act_hardsigmoid": (_probe(lambda: nn.Hardsigmoid()), S),
    "act_hardswish": (_probe(lambda: nn.Hardswish()), S),
    "act_leaky_relu_0_1015625": (_probe(lambda: nn.LeakyReLU(0.1015625)), S),  # 26 / 256: the DPU's alpha
    "act_leaky_relu_0_1": (_probe(lambda: nn.LeakyReLU(0.1)), S),
    "act_sigmoid": (_probe(lambda: nn.Sigmoid()), S),
    "act_tanh": (_probe(lambda: nn.Tanh()), S),
    "act_hardtanh": (_probe(lambda: nn.Hardtanh(-1.0, 1.0)), S),
    "act_gelu": (_probe(lambda: nn.GELU()), S),
    "act_silu": (_probe(lambda: nn.SiLU()), S),
    "act_mish": (_probe(lambda: nn.Mish()), S),
    "act_softmax_channels": (_probe(lambda: nn.Softmax(dim=1)), S),
    "op_neg": (_probe(lambda: Fn(torch.neg)), S),
    "op_exp": (_probe(lambda: Fn(torch.exp)), S),
    "op_sum_keepdim": (_probe(lambda: Fn(lambda x: x.sum(dim=1, keepdim=True)), op_out=1), S),
    "op_mean_keepdim": (_probe(lambda: Fn(lambda x: x.mean(dim=(2, 3), keepdim=True))), S),
    "op_channel_slice": (_probe(lambda: Fn(lambda x: x[:, :4]), op_out=4), S),
    "op_batchnorm_unfolded": (_probe(lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm2d(8))), S),
    "op_groupnorm": (_probe(lambda: nn.GroupNorm(2, 8)), S),
    # --- pads ---
    "pad_zero_f_pad": (_probe(lambda: Fn(lambda x: F.pad(x, (1, 1, 1, 1)))), S),
    "pad_constant_pad_nd": (_probe(lambda: Fn(lambda x: torch.constant_pad_nd(x, (1, 1, 1, 1), 0.0))), S),
    "pad_reflect": (_probe(lambda: nn.ReflectionPad2d(1)), S),
    "pad_replicate": (_probe(lambda: nn.ReplicationPad2d(1)), S),
    # --- reshape, flatten, concat, permute at the DPU's edges ---
    "head_flatten_linear": (lambda: Head("flatten"), S),
    "head_reshape_linear": (lambda: Head("reshape"), S),
    "head_reshape_spatial_linear": (lambda: Head("reshape_spatial"), S),  # 2x2 pooled: the permute stays
    "reshape_output_first_dim_changed": (lambda: ReshapeOut(), S),
    "reshape_internal": (lambda: ReshapeInternal(), S),
    "concat_channels": (lambda: Concat("channels"), S),
    "concat_with_input": (lambda: Concat("input"), S),
    "concat_after_cpu_op": (lambda: Concat("after_cpu"), S),
    "permute_explicit_linear": (lambda: PermuteExplicit(), S),
}

NAMES = list(OPS)


def input_size(name: str) -> tuple[int, ...]:
    return OPS[name][1]


def build(name: str, seed: int = SEED) -> nn.Module:
    if name not in OPS:
        raise KeyError(f"unknown op model {name!r}; ops_zoo has: {', '.join(OPS)}")
    torch.manual_seed(0)
    return zoo.init_deterministic(OPS[name][0](), seed)


def inputs(name: str, seed: int = SEED) -> np.ndarray:
    """[BATCH, *input_size(name)] float32 from numpy, keyed by the model's name."""
    return zoo._stream(seed, f"ops/{name}/input").standard_normal((BATCH,) + input_size(name)).astype(np.float32)
