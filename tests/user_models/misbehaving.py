"""Models that misbehave on purpose, to test how hostctl copes."""

import os
import sys
import time

import torch
from torch import nn


class Slow(nn.Module):
    """Sleeps in every forward, so that a test can interrupt a run mid-calibration."""

    def __init__(self, classes: int = 3, delay: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.conv(x)


class ExitsZero(nn.Module):
    """Exits the process with status 0 on its Nth forward, the way nndct does after some errors."""

    def __init__(self, classes: int = 3, after: int = 3, hard: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.after = after
        self.hard = hard
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after and os.environ.get("HOSTCTL_TEST_MISBEHAVE") == "1":
            sys.stdout.flush()
            if self.hard:
                os._exit(0)
            sys.exit(0)
        return self.conv(x)
