"""The default model: a UNet of conv+BN+ReLU blocks, max pools, transposed-conv upsampling and a 1x1 head.

Every op maps onto a DPU-supported operator, so the whole network quantizes and compiles for the DPU.
"""

from typing import List

import torch
from torch import nn


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Unet(nn.Module):
    """UNet with `depth` down/up levels; `width` channels at the top level, doubled at each level down."""

    def __init__(self, num_classes: int = 7, in_channels: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("Unet needs depth >= 1 and width >= 1")
        channels = [width * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, channels[0])
        self.downs = nn.ModuleList(DoubleConv(channels[i], channels[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up_convs = nn.ModuleList(DoubleConv(channels[i] * 2, channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: List[torch.Tensor] = []
        x = self.inc(x)
        for down in self.downs:
            skips.append(x)
            x = down(self.pool(x))
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
