"""A small segmentation net made deliberately bad for int8 quantization: its conv `bad` has one output channel
whose range is `scale` times the others' (its weights and bias scaled up, the next conv's weights for that channel
scaled down by as much, so the float function is unchanged). One fix position per tensor then leaves the other
channels of that conv's output (and weights) only a few levels. A leaky ReLU follows it, so vai_q_pytorch's
cross-layer equalization (which would undo the scaling across a conv-ReLU-conv chain) does not apply. Used by the
layer-analysis tests through --model badchannel:BadChannel --model-path."""

import torch
import torch.nn.functional as F
from torch import nn

DPU_LEAKY_SLOPE = 0.1015625  # what the DPU computes, so that the float model is the one quantized


class BadChannel(nn.Module):
    def __init__(self, classes: int = 3, channels: int = 8, scale: float = 300.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.bad = nn.Conv2d(channels, channels, 3, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(channels, classes, 1)
        with torch.no_grad():
            self.bad.weight[0] *= scale
            self.bad.bias[0] *= scale
            self.mid[0].weight[:, 0] /= scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.leaky_relu(self.bad(x), DPU_LEAKY_SLOPE)
        return self.head(self.mid(x))
