"""A user's own segmentation model, deliberately unlike the built-in Unet: residual adds, avg pooling,
bilinear upsampling and a LeakyReLU. Used by tests through --model tinyseg:TinySeg --model-path."""

import torch
import torch.nn.functional as F
from torch import nn


class TinySeg(nn.Module):
    def __init__(self, classes: int = 3, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.pool = nn.AvgPool2d(2)
        self.mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1015625)
        self.head = nn.Conv2d(channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.branch(x))
        y = self.act(self.mid(self.pool(x)))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(x + y)
