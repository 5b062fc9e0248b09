"""How many threads the payload uses, and how they wait (issue 25; DESIGN.md section 12).

On small or shared machines torch's default (one OpenMP thread per CPU, spinning while it waits for work) runs
element-wise and convolution work many times slower than it should: two threads spinning on two vCPUs beside
other work, in a container most of all (measured: 8-20x). The payload therefore gets

    OMP_NUM_THREADS=N         N = the CPUs the payload may use (affinity, cgroup quota, --cpus), less those
                              other work keeps busy right now (/proc/stat over a fifth of a second), at least 1;
                              --threads N overrides
    OMP_WAIT_POLICY           ACTIVE (OpenMP's spinning, torch's default) when N > 1: those CPUs were idle, and
                              spinning threads hand work over fastest; PASSIVE otherwise (and with --threads),
                              where a spinning thread would fight other work for a CPU (measured: a small UNet's
                              float forward 7.36 s -> 0.99 s in a container beside other work)

The numbers behind the choice (scripts/bench.py threads), on 2 CPUs, against 1 thread: quiet, 2 spinning threads
calibrate in 0.69x the time, 2 passive ones in 1.42x; beside a CPU-bound process, 2 spinning threads take 2.32x,
2 passive 0.98x, 1 thread is best. README, performance section.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

PASSIVE, ACTIVE = "PASSIVE", "ACTIVE"
STAT_WINDOW = 0.15  # seconds of /proc/stat that say how busy the CPUs are
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    wait_policy: str
    cpus: float  # the CPUs the payload may use
    busy: float | None  # the CPUs other work kept busy when the plan was made (None: not needed, not measured)
    why: str

    @property
    def wait_policy_note(self) -> str:
        return "spinning" if self.wait_policy == ACTIVE else "waiting passively"

    def environment(self) -> dict[str, str]:
        """The payload's variables: the thread counts, and OMP_WAIT_POLICY=PASSIVE where threads must not spin
        (spinning is OpenMP's default, as measured: torch's default spin count, not ACTIVE's endless one)."""
        env = {name: str(self.threads) for name in THREAD_VARIABLES}
        if self.wait_policy == PASSIVE:
            env["OMP_WAIT_POLICY"] = PASSIVE
        return env

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (cgroup v2 cpu.max, v1 cpu.cfs_quota_us), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CpuSample:
    """How busy the machine's CPUs are between now and a later call of busy(): a runtime takes the first reading
    when it is made and the second when it needs the plan, so that the window costs no waiting."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        import time

        self.stat = stat
        self.started = time.monotonic()
        self.first = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in self.stat.read_text().split("\n", 1)[0].split()[1:]]
            return sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait
        except (OSError, ValueError, IndexError):
            return None

    def busy(self, window: float = STAT_WINDOW) -> float | None:
        """The CPUs other work kept busy since the first reading (waiting until `window` seconds have passed),
        or None where /proc/stat cannot be read."""
        import time

        left = window - (time.monotonic() - self.started)
        if left > 0:
            time.sleep(left)
        second = self._read()
        if self.first is None or second is None or second[0] <= self.first[0]:
            return None
        ticks = second[0] - self.first[0]
        return (os.cpu_count() or 1) * (ticks - (second[1] - self.first[1])) / ticks


def busy_cpus(window: float = STAT_WINDOW, stat: Path = Path("/proc/stat")) -> float | None:
    """How many CPUs other work keeps busy now: the machine's non-idle time over `window` seconds (this process
    sleeps meanwhile), or None where /proc/stat cannot be read. The load average lags a minute both ways."""
    return CpuSample(stat).busy(window)


def plan_threads(requested: int | None = None, cpus_limit: float | None = None, *, cpus: int | None = None,
                 quota: float | None = None, busy: float | None = None,
                 sample: CpuSample | None = None) -> ThreadPlan:
    """The payload's threads: --threads if given, else the CPUs it may use less those other work keeps busy.
    (cpus, quota, busy: this machine's unless given, for tests.)"""
    cpus = allowed_cpus() if cpus is None else cpus
    quota = cgroup_cpu_quota() if quota is None else quota
    usable = float(cpus)
    for limit in (quota, cpus_limit):
        if limit is not None and limit > 0:
            usable = min(usable, limit)
    if requested == 1 and busy is None:  # one thread waits passively whatever the load: no window to wait for
        return ThreadPlan(1, PASSIVE, usable, None, "--threads")
    if busy is None:
        busy = sample.busy() if sample is not None else busy_cpus()
        if busy is None:
            try:
                busy = os.getloadavg()[0]
            except OSError:
                busy = 0.0
    busy = busy or 0.0
    whole = max(1, math.floor(usable + 0.01))
    # other work on the machine's CPUs leaves fewer to us, when it does not fit in what we may not use anyway
    others = max(0.0, busy - (cpus - whole))
    free = max(1, min(whole, math.floor(whole - others + 0.5)))
    if requested is not None:  # as asked; spinning only where that many CPUs are idle
        return ThreadPlan(requested, ACTIVE if 1 < requested <= free else PASSIVE, usable, round(busy, 2),
                          "--threads")
    why = f"{whole} CPU(s) usable" + (f", {busy:.1f} busy" if free < whole else "")
    return ThreadPlan(free, ACTIVE if free > 1 else PASSIVE, usable, round(busy, 2), why)


def plan_remote(requested: int | None, cpus_limit: float | None, engine_cpus: int) -> ThreadPlan:
    """A remote engine's payload: the engine's CPUs as it reports them, not this machine's; how busy they are
    cannot be seen from here (this machine's load is not theirs), so none are counted busy."""
    plan = plan_threads(requested, cpus_limit, cpus=engine_cpus, quota=0.0, busy=0.0)
    if requested is not None:
        return replace(plan, busy=None)
    return replace(plan, busy=None, why=f"{plan.why} on the remote engine, whose load is not seen from here")
