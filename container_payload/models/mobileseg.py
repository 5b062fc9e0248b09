"""A small MobileNetV3-style segmentation net: hardswish, squeeze-excitation, depthwise convs with BatchNorm,
and an LR-ASPP-like head (a pooled gate on the deep features, a skip from stride 4, bilinear upsampling).

Every op maps onto a DPU operator on DPUCZDX8G (hardswish, hardsigmoid, depthwise conv, add, mul, resize), as in
torchvision's LR-ASPP MobileNetV3, and its BatchNorms have that model's eps. It is the model of issue 21:
per-tensor power-of-two weights lose accuracy on its depthwise convs, whose folded BatchNorm scales differ widely
between channels, so plain post-training quantization costs it several points of mIoU, which fast finetune wins
back (scripts/train_mobileseg.py trains it on the demo's data).
"""

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # torchvision's MobileNetV3 uses this eps (its default, 1e-5, is the BatchNorm2d's)


def _act(kind: str) -> nn.Module:
    return nn.Hardswish() if kind == "hswish" else nn.ReLU()


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: Optional[str] = "relu") -> None:
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=BN_EPS)]
        if act is not None:
            layers.append(_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expand, kxk depthwise, optional squeeze-excitation, 1x1 project, residual add."""

    def __init__(self, cin: int, expanded: int, cout: int, kernel: int, stride: int, se: bool, act: str) -> None:
        super().__init__()
        self.residual = stride == 1 and cin == cout
        layers = []  # type: list
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcite(expanded, max(8, expanded // 4)))
        layers.append(ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (kernel, expanded, out, squeeze-excitation, activation, stride), after MobileNetV3-Small's first blocks, with
# hardswish throughout
BLOCKS = (
    (3, 16, 16, False, "hswish", 1),
    (3, 48, 24, False, "hswish", 2),
    (3, 72, 24, False, "hswish", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 120, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
)
SKIP_BLOCK = 2  # the last block at stride 4 feeds the head's skip


class MobileSeg(nn.Module):
    """Output stride 8; `width` scales every channel count (1.0: 16 at the stem)."""

    def __init__(self, num_classes: int = 7, in_channels: int = 3, width: float = 1.0, head: int = 64) -> None:
        super().__init__()
        if width <= 0 or head < 1:
            raise ValueError("MobileSeg needs width > 0 and head >= 1")

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        self.stem = ConvBNAct(in_channels, ch(16), 3, 2, act="hswish")
        blocks, cin = [], ch(16)
        for kernel, expanded, cout, se, act, stride in BLOCKS:
            blocks.append(InvertedResidual(cin, ch(expanded), ch(cout), kernel, stride, se, act))
            cin = ch(cout)
        self.blocks = nn.ModuleList(blocks)
        skip = ch(BLOCKS[SKIP_BLOCK][2])
        # LR-ASPP: a 1x1 branch gated by a pooled 1x1 branch (hardsigmoid instead of sigmoid: the DPU runs it)
        self.head_conv = ConvBNAct(cin, head, 1, act="relu")
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.head_gate = nn.Conv2d(cin, head, 1)
        self.head_gate_act = nn.Hardsigmoid()
        self.low_classifier = nn.Conv2d(skip, num_classes, 1)
        self.high_classifier = nn.Conv2d(head, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.stem(x)
        low = x
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == SKIP_BLOCK:
                low = x
        high = self.head_conv(x) * self.head_gate_act(self.head_gate(self.head_pool(x)))
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.low_classifier(low) + self.high_classifier(high)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
