"""Fast finetune's samples (container_payload/finetuning.py) and the vai backend's correction of nndct 3.5's
swapped version check in its fast finetune."""

from __future__ import annotations

import sys
import types
from enum import Enum

import h5py
import numpy as np
import pytest
import torch
from helpers import random_samples, write_samples

from container_payload.data import SampleReader
from container_payload.finetuning import FinetuneSet, choose


@pytest.fixture
def calibration(tmp_path) -> SampleReader:
    calib = random_samples(10, (3, 4, 4), seed=1, prefix="c")
    return SampleReader(str(write_samples(tmp_path / "s.h5", calib, random_samples(1, (3, 4, 4)))), "calibration")


def test_the_seed_chooses_and_orders_the_samples(calibration):
    names = list(calibration.names)
    a, b = FinetuneSet(calibration, 4, 6, seed=7), FinetuneSet(calibration, 4, 6, seed=7)
    assert a.names == b.names and len(a) == 6 and set(a.names) <= set(names)
    assert FinetuneSet(calibration, 4, 6, seed=8).names != a.names
    assert sorted(FinetuneSet(calibration, 4, None, seed=3).names) == sorted(names)
    assert len(FinetuneSet(calibration, 4, 50, seed=3)) == 10  # more than there are: all of them
    assert choose(names, 3, 0) == choose(names, 3, 0)


def test_the_set_reads_its_batches_afresh_on_each_pass(calibration):
    ft = FinetuneSet(calibration, 4, 6, seed=7)
    first, second = list(ft), list(ft)
    assert [b.shape[0] for b in first] == [4, 2] and ft.batch_count() == 2
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    with h5py.File(calibration.path) as h5:
        expected = np.stack([h5["calibration"][n][()] for n in ft.names])
    np.testing.assert_array_equal(torch.cat(first).numpy(), expected)


def test_nndct_finetune_version_check_is_put_in_order(monkeypatch):
    # adaquant.py 3.5 calls compare_torch_version('1.6.0', CmpFlag.GREATER_EQUAL); the function takes (flag, version)
    from container_payload.backends.vai import fix_finetune_version_check

    class CmpFlag(Enum):
        GREATER_EQUAL = 4

    def compare_torch_version(compare_type, version):
        if compare_type == CmpFlag.GREATER_EQUAL:
            return True
        return None  # what the real function returns for a swapped call

    modules = {name: types.ModuleType(name) for name in ("pytorch_nndct", "pytorch_nndct.qproc",
                                                         "pytorch_nndct.qproc.adaquant", "pytorch_nndct.utils",
                                                         "pytorch_nndct.utils.torch_utils")}
    modules["pytorch_nndct.utils.torch_utils"].CmpFlag = CmpFlag
    modules["pytorch_nndct.qproc.adaquant"].compare_torch_version = compare_torch_version
    modules["pytorch_nndct.qproc"].adaquant = modules["pytorch_nndct.qproc.adaquant"]
    modules["pytorch_nndct.utils"].torch_utils = modules["pytorch_nndct.utils.torch_utils"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    adaquant = modules["pytorch_nndct.qproc.adaquant"]
    assert adaquant.compare_torch_version("1.6.0", CmpFlag.GREATER_EQUAL) is None
    assert fix_finetune_version_check() is True
    assert adaquant.compare_torch_version("1.6.0", CmpFlag.GREATER_EQUAL) is True
    assert adaquant.compare_torch_version(CmpFlag.GREATER_EQUAL, "1.6.0") is True
    fixed = adaquant.compare_torch_version
    assert fix_finetune_version_check() is True and adaquant.compare_torch_version is fixed  # wraps once


def test_without_nndct_nothing_is_fixed(monkeypatch):
    from container_payload.backends.vai import fix_finetune_version_check

    monkeypatch.setitem(sys.modules, "pytorch_nndct", None)
    assert fix_finetune_version_check() is False


def test_nndct_layer_loop_reports_progress_while_finetuning(monkeypatch):
    from container_payload.backends.vai import layer_progress

    adaquant = types.ModuleType("pytorch_nndct.qproc.adaquant")
    adaquant.tqdm = lambda iterable, total=None: iterable  # what nndct's loop calls: tqdm(enumerate(group), total=n)
    qproc = types.ModuleType("pytorch_nndct.qproc")
    qproc.adaquant = adaquant
    for name, module in (("pytorch_nndct", types.ModuleType("pytorch_nndct")), ("pytorch_nndct.qproc", qproc),
                         ("pytorch_nndct.qproc.adaquant", adaquant)):
        monkeypatch.setitem(sys.modules, name, module)
    original, seen = adaquant.tqdm, []
    with layer_progress(lambda stage, done, total: seen.append((stage, done, total))):
        tuned = [name for _, name in adaquant.tqdm(enumerate(["conv1", "dw", "head"]), total=3)]
    assert tuned == ["conv1", "dw", "head"]
    assert seen == [("layer", 1, 3), ("layer", 2, 3), ("layer", 3, 3)]
    assert adaquant.tqdm is original


def test_the_step_hands_the_backend_its_samples_and_reports(calibration, capsys):
    from container_payload.finetuning import fast_finetune
    from container_payload.job import Job

    class Backend:
        name = "test"

        def fast_finetune(self, batches, count, progress):
            self.passes = [[b.shape[0] for b in batches()] for _ in range(2)]  # afresh on each call
            self.count = count
            progress("layer", 1, 3)

    backend, warnings = Backend(), []
    job = Job(state_dict="s", samples=calibration.path, run_dir="r", input_size=(3, 4, 4), calib_batch_size=4,
              fast_finetune=True, finetune_samples=50, finetune_seed=2)
    record = fast_finetune(backend, calibration, job, warn=warnings.append)
    assert backend.passes == [[4, 4, 2], [4, 4, 2]] and backend.count == 3
    assert record["samples"] == 10 and record["batches"] == 3 and record["seed"] == 2
    assert warnings == ["fast finetune: 50 samples asked, the calibration set has 10: finetuning on all of them"]
    out = capsys.readouterr().out
    assert "fast finetune on 10 calibration samples (3 batches of 4, seed 2)" in out
    assert '"event":"progress"' in out.replace(" ", "") and '"stage":"layer"' in out.replace(" ", "")


def test_a_backend_without_fast_finetune_is_refused(calibration):
    from container_payload.backends import BackendError
    from container_payload.finetuning import fast_finetune
    from container_payload.job import Job

    job = Job(state_dict="s", samples=calibration.path, run_dir="r", input_size=(3, 4, 4), fast_finetune=True)
    with pytest.raises(BackendError, match="has no fast finetune"):
        fast_finetune(types.SimpleNamespace(name="other"), calibration, job)
