"""The payload's thread plan (issue 25): the CPUs it may use, less those other work keeps busy; threads spin
only where their CPUs are idle."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostctl.threads import THREAD_VARIABLES, cgroup_cpu_quota, plan_remote, plan_threads


@pytest.mark.parametrize("cpus,quota,limit,busy,threads", [
    (2, None, None, 0.1, 2),    # a quiet 2-CPU machine: both
    (2, None, None, 1.0, 1),    # one CPU-bound neighbour: the other CPU
    (2, None, None, 5.0, 1),    # overloaded: never fewer than 1
    (8, 2.5, None, 0.0, 2),     # a cgroup quota of 2.5 CPUs: 2 threads
    (8, None, 4.0, 0.0, 4),     # --cpus 4
    (8, None, 4.0, 3.0, 4),     # --cpus 4 of 8, 3 busy: the other 4 are free
    (8, None, 0.5, 0.0, 1),     # --cpus 0.5
    (16, None, None, 3.4, 13),  # what is busy besides us
])
def test_threads_follow_the_cpus_and_what_is_busy(cpus, quota, limit, busy, threads):
    plan = plan_threads(cpus_limit=limit, cpus=cpus, quota=quota, busy=busy)
    assert plan.threads == threads
    env = plan.environment()
    assert all(env[name] == str(threads) for name in THREAD_VARIABLES)
    # one thread waits passively; several spin (OpenMP's default) only on CPUs that were idle
    assert env.get("OMP_WAIT_POLICY") == ("PASSIVE" if threads == 1 else None)


def test_threads_option_wins_and_spins_only_on_idle_cpus():
    plan = plan_threads(3, cpus=2, quota=None, busy=1.5)
    assert (plan.threads, plan.why, plan.environment()["OMP_WAIT_POLICY"]) == (3, "--threads", "PASSIVE")
    plan = plan_threads(2, cpus=4, quota=None, busy=0.0)
    assert plan.threads == 2 and "OMP_WAIT_POLICY" not in plan.environment()


def test_a_remote_engine_is_planned_from_its_own_cpus(monkeypatch):
    """The payload runs on the engine's machine: its CPU count, whatever this machine's count and load."""
    monkeypatch.setattr("hostctl.threads.busy_cpus", lambda: pytest.fail("this machine's load was read"))
    plan = plan_remote(None, None, 16)
    assert (plan.threads, plan.wait_policy, plan.busy) == (16, "ACTIVE", None)
    assert plan.why == "16 CPU(s) usable on the remote engine, whose load is not seen from here"
    assert plan_remote(None, 4.0, 16).threads == 4  # --cpus
    plan = plan_remote(2, None, 16)
    assert (plan.threads, plan.why, plan.environment().get("OMP_WAIT_POLICY")) == (2, "--threads", None)
    assert plan_remote(None, None, 1).environment()["OMP_WAIT_POLICY"] == "PASSIVE"


def test_one_thread_needs_no_look_at_the_load():
    """--threads 1 (and inspect's one forward) waits passively whatever the load: the 0.2 s window is not
    waited for."""

    class Unread:
        def busy(self, window: float = 0.2) -> float:
            raise AssertionError("the load was sampled")

    plan = plan_threads(1, cpus=2, quota=None, sample=Unread())
    assert (plan.threads, plan.busy, plan.environment()["OMP_WAIT_POLICY"]) == (1, None, "PASSIVE")


def test_busy_cpus_are_read_from_proc_stat(tmp_path: Path, monkeypatch):
    from hostctl import threads

    stat = tmp_path / "stat"
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  150 0 150 900 0 0 0 0 0 0\n"])
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: next(samples))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    # 100 of 200 ticks busy on 2 CPUs: one CPU's worth
    assert threads.busy_cpus(0.0, stat) == 1.0


def test_cgroup_quotas_are_read(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_quota(tmp_path) == 3.0
