"""Models for the benchmarks, written out here so that they need nothing beyond torch.

MobileNetV3Seg is MobileNetV3-Large (torchvision's layer table: inverted residuals, depthwise 3x3 and 5x5
convs, squeeze-excitation gates with hardsigmoid, hardswish) under an LR-ASPP head (a sigmoid-gated 1x1 branch,
bilinear upsampling): the many-small-layers case, where per-op overhead shows. hostctl can load it with
`--model-path scripts --model bench_models:MobileNetV3Seg`.
"""


import torch
import torch.nn.functional as F
from torch import nn

# kernel, expanded channels, out channels, squeeze-excitation, hardswish (else ReLU), stride
_LARGE = [
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
]


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: nn.Module = None):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = _divisible(channels // 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, act=act()))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act()))
        if se:
            layers.append(SqueezeExcitation(expanded))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class MobileNetV3Seg(nn.Module):
    """LR-ASPP on MobileNetV3-Large: per-pixel logits at the input's resolution."""

    def __init__(self, num_classes: int = 7, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 16, 3, 2, act=nn.Hardswish())]
        cin = 16
        self.low_index = 0
        for i, (kernel, expanded, cout, se, hswish, stride) in enumerate(_LARGE):
            layers.append(InvertedResidual(cin, kernel, _divisible(expanded), cout, se, hswish, stride))
            cin = cout
            if cout == 40:
                self.low_index = i + 1  # the last block at 1/8 resolution
        layers.append(_conv_bn(cin, 960, 1, act=nn.Hardswish()))
        self.features = nn.ModuleList(layers)
        self.cbr = _conv_bn(960, 128, 1, act=nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(960, 128, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(40, num_classes, 1)
        self.high_classifier = nn.Conv2d(128, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.low_index:
                low = x
        high = self.cbr(x) * self.scale(x)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.low_classifier(low) + self.high_classifier(high)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
