"""hostctl demo's parts that need no full run: training is a fixed amount of work, whatever the clock says."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch

import hostctl.demo as demo
from hostctl.synthetic import write_dataset


class QuietReporter:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def task(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return contextlib.nullcontext()

    def update_task(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        pass

    def close(self) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def test_training_runs_every_step_however_slow_the_machine(tmp_path, monkeypatch):
    """A busy machine once cut training at step 38 of 400 (a time limit), float mIoU 0.64: the clock must not
    decide how much the demo trains. Here each clock reading jumps 1000 s, as on a machine slower than any."""
    config = replace(demo.FAST, size=32, num_train=16, num_test=4, width=4, depth=1, steps=5, batch_size=8)
    write_dataset(tmp_path / "dataset", config.num_train, config.num_test, config.size, config.size, 0)
    now = [0.0]

    def slow_clock() -> float:
        now[0] += 1000.0
        return now[0]

    monkeypatch.setattr(demo.time, "perf_counter", slow_clock)
    reporter = QuietReporter()
    threads = torch.get_num_threads()
    steps, loss = demo.train(tmp_path / "dataset", tmp_path / "checkpoint.pt", config, reporter)
    assert steps == config.steps and loss == loss  # not NaN
    assert reporter.warnings == []
    assert torch.load(tmp_path / "checkpoint.pt")["steps"] == config.steps
    assert torch.get_num_threads() == threads  # training's single thread is given back


def test_the_demo_configs_are_a_fixed_amount_of_work():
    for config in (demo.FULL, demo.FAST):
        assert not hasattr(config, "time_limit")
        assert config.steps > 0
