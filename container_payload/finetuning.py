"""Fast finetune's step in a run (issue 21), for every backend that has one.

Its samples: `finetune_samples` of the calibration samples (all by default), chosen and ordered by
`finetune_seed`, in batches of the calibration batch size.

Every backend takes them from here, so nndct's fast finetune (vai) and the portable one see the same inputs in
the same batches. The set is re-iterable and reads the HDF5 file on each pass: nndct's fast finetune forwards it
twice (once with quantization off to cache the float tensors, once on to calibrate), and a portable
implementation may stream it layer by layer.
"""

import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

from container_payload.backends import Backend, BackendError
from container_payload.data import SampleReader
from container_payload.events import Phase, emit, log
from container_payload.job import Job


def choose(names: List[str], count: Optional[int], seed: int) -> List[str]:
    """count names (all when None, or when count exceeds them) drawn without replacement, in the seed's order."""
    order = np.random.default_rng(seed).permutation(len(names))
    if count is not None:
        order = order[:count]
    return [names[i] for i in order]


class _Chosen(SampleReader):
    """A reader of given names of a group (SampleReader's own constructor reads them from the file)."""

    def __init__(self, path: str, group: str, names: List[str]) -> None:  # noqa: D107
        self.path, self.group, self.names = path, group, names


class FinetuneSet:
    def __init__(self, calibration: SampleReader, batch_size: int, count: Optional[int] = None, seed: int = 0) -> None:
        self.reader = _Chosen(calibration.path, calibration.group, choose(list(calibration.names), count, seed))
        self.batch_size = batch_size
        self.seed = seed
        self.requested = count

    @property
    def names(self) -> List[str]:
        return self.reader.names

    def __len__(self) -> int:
        """Samples, not batches."""
        return len(self.reader.names)

    def batch_count(self) -> int:
        return self.reader.batch_count(self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _, array in self.reader.batches(self.batch_size):
            yield torch.from_numpy(array)


def fast_finetune(backend: Backend, calibration: SampleReader, job: Job, phase: str = "finetune",
                  warn: Callable[[str], None] = print) -> Dict[str, Any]:
    """Runs the backend's fast finetune before its calibration; returns what run.json records of it."""
    if not callable(getattr(backend, "fast_finetune", None)):
        raise BackendError("the {} quantizer has no fast finetune; drop --fast-finetune".format(backend.name))
    samples = FinetuneSet(calibration, job.calib_batch_size, job.finetune_samples, job.finetune_seed)
    if job.finetune_samples is not None and job.finetune_samples > len(samples):
        warn("fast finetune: {} samples asked, the calibration set has {}: finetuning on all of them".format(
            job.finetune_samples, len(samples)))
    batches = samples.batch_count()
    log("fast finetune on {} calibration samples ({} batch{} of {}, seed {})".format(
        len(samples), batches, "" if batches == 1 else "es", job.calib_batch_size, job.finetune_seed))
    start = time.perf_counter()
    with Phase(phase, 0, unit="steps") as progress:
        def report(stage: str, done: int, total: int) -> None:
            progress.done, progress.total = done, total
            emit("progress", name=phase, done=done, total=total, stage=stage)

        backend.fast_finetune(lambda: iter(samples), samples.batch_count(), report)
    return {"samples": len(samples), "batches": samples.batch_count(), "batch_size": job.calib_batch_size,
            "seed": job.finetune_seed, "seconds": round(time.perf_counter() - start, 2)}
