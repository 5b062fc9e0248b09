"""Models that misbehave on purpose, to test how hostctl copes."""

import os
import sys
import time

import torch
from torch import nn


def _sleep_then_copy(x: torch.Tensor, delay: float) -> torch.Tensor:
    time.sleep(delay)
    return x.clone()


# The pause is an operator of its own, so that it survives graph capture by a quantizer: a torch.jit trace (as
# vai_q_pytorch and the portable quantizer capture models) records the call and runs it at every forward,
# where a plain Python sleep would run once, while tracing.
try:
    _LIB = torch.library.Library("hostctl_test", "DEF")
    _LIB.define("pause(Tensor x, float delay) -> Tensor")
    _LIB.impl("pause", _sleep_then_copy, "CPU")
except RuntimeError:  # defined already (the module imported twice in one process)
    pass


def pause(x: torch.Tensor, delay: float) -> torch.Tensor:
    return torch.ops.hostctl_test.pause(x, delay)


class Slow(nn.Module):
    """Sleeps in every forward, so that a test can interrupt a run mid-calibration."""

    def __init__(self, classes: int = 3, delay: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pause(x, self.delay))


_calls = [0]


def exit_after(x: torch.Tensor, after: int, hard: bool) -> torch.Tensor:
    _calls[0] += 1
    if _calls[0] > after and os.environ.get("HOSTCTL_TEST_MISBEHAVE") == "1":
        sys.stdout.flush()
        if hard:
            os._exit(0)
        sys.exit(0)
    return x


torch.fx.wrap("exit_after")


class ExitsZero(nn.Module):
    """Exits the process with status 0 after N forwards, the way nndct does after some errors."""

    def __init__(self, classes: int = 3, after: int = 2, hard: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.after = after
        self.hard = hard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(exit_after(x, self.after, self.hard))


class ExitsWith(nn.Module):
    """Exits the payload with a given status on its first forward."""

    def __init__(self, classes: int = 3, code: int = 42) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.code = code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.path.exists("/hostctl/run/job.json"):  # only inside the container, not in host validation
            print(f"exiting with {self.code} as asked", flush=True)
            sys.exit(self.code)
        return self.conv(x)


class NeedsProbe(nn.Module):
    """Imports a package that only --requirements provides (inside the container)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        if os.path.exists("/hostctl/run/job.json"):
            import hostctl_probe

            print(hostctl_probe.MESSAGE, flush=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class KilledBy(nn.Module):
    """Killed by a signal (SIGKILL: what the kernel's OOM killer sends) on its first forward inside the payload."""

    def __init__(self, classes: int = 3, signum: int = 9) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        self.signum = signum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.path.exists("job.json") or os.path.exists("/hostctl/run/job.json"):  # the payload's run directory
            os.kill(os.getpid(), self.signum)
        return self.conv(x)
