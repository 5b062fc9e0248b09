"""Test helpers: tiny real inputs (HDF5 samples, state_dicts of real torch models), running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FAKE_NNDCT = ROOT / "tests" / "fake_nndct"
USER_MODELS = ROOT / "tests" / "user_models"
TINY_SIZE = (3, 32, 32)
TINY_UNET_ARGS = {"width": 4, "depth": 2}


def write_samples(path: Path, calib: dict[str, np.ndarray], test: dict[str, np.ndarray],
                  labels: dict[str, np.ndarray] | None = None) -> Path:
    with h5py.File(path, "w", track_order=True) as h5:
        for group_name, samples in (("calibration", calib), ("test", test), ("labels", labels)):
            if samples is None:
                continue
            group = h5.create_group(group_name, track_order=True)
            for name, array in samples.items():
                group.create_dataset(name, data=array)
    return path


def random_samples(n: int, size=TINY_SIZE, seed: int = 0, prefix: str = "s") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i:03d}": rng.standard_normal(size).astype(np.float32) for i in range(n)}


@dataclass
class Inputs:
    dir: Path
    samples: Path
    state_dict: Path


def make_inputs(directory: Path, model: torch.nn.Module, *, n_calib: int = 6, n_test: int = 4, size=TINY_SIZE,
                num_classes: int = 3, test_names: list[str] | None = None, labels: bool = True) -> Inputs:
    directory.mkdir(parents=True, exist_ok=True)
    calib = random_samples(n_calib, size, seed=1, prefix="c")
    test = random_samples(n_test, size, seed=2, prefix="t")
    if test_names is not None:
        test = dict(zip(test_names, test.values(), strict=True))
    label_maps = None
    if labels:
        rng = np.random.default_rng(3)
        label_maps = {name: rng.integers(0, num_classes, size[1:], dtype=np.uint8) for name in test}
    samples = write_samples(directory / "quantization_samples.h5", calib, test, label_maps)
    state_dict = directory / "state_dict.pt"
    torch.save(model.state_dict(), state_dict)
    return Inputs(directory, samples, state_dict)


def tiny_unet(num_classes: int = 3) -> torch.nn.Module:
    from container_payload.models.unet import Unet

    torch.manual_seed(0)
    return Unet(num_classes=num_classes, **TINY_UNET_ARGS)


def tiny_args(inputs: Inputs, output_dir: Path, *extra: str, num_classes: int = 3) -> list[str]:
    args = ["quantize", "--runtime", "local", "--input-dir", str(inputs.dir), "--output-dir", str(output_dir),
            "--input-size", *map(str, TINY_SIZE), "--num-classes", str(num_classes), "--calib-batch-size", "4"]
    if not any(a == "--model" for a in extra):
        args += [f"--model-arg={k}={v}" for k, v in TINY_UNET_ARGS.items()]
    return args + list(extra)


def run_hostctl(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("COLUMNS", "200")
    full_env["PYTHONPATH"] = source_path(full_env.get("PYTHONPATH"))
    return subprocess.run([sys.executable, "-m", "hostctl", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


def source_path(pythonpath: str | None) -> str:
    """PYTHONPATH that imports this checkout's hostctl whatever the working directory (not an installed copy)."""
    return os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)


def tree_snapshot(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def hostctl_inprocess(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in this process (fast: torch is already imported); returns (exit code, stdout, stderr)."""
    from hostctl.cli import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def float_run(g, x: torch.Tensor) -> torch.Tensor:
    """A captured graph run with its float parameters and no quantization (fused activations still applied)."""
    from container_payload.backends.portable.engine import Runner

    return Runner(g).run(x, lambda n: (n.weight, n.bias), lambda n, v, act: v if act is None else act(v))
