"""HDF5 samples in, predictions out, one batch at a time.

Readers fetch the next batch on a background thread while the model works on the current one (h5py holds its
own lock, torch releases the GIL, so the two overlap). Writers store each prediction as it comes. Memory stays
flat in the number of samples: at most `prefetch + 1` batches are alive at once.
"""

import os
import queue
import re
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np

Batch = Tuple[List[str], np.ndarray]


def sample_names(h5: h5py.File, group: str, limit: Optional[int] = None) -> List[str]:
    """Dataset names of a group in the file's order (creation order where the file tracks it)."""
    names = [name for name, item in h5[group].items() if isinstance(item, h5py.Dataset)]
    return names if limit is None else names[:limit]


class SampleReader:
    def __init__(self, path: str, group: str, limit: Optional[int] = None) -> None:
        self.path = path
        self.group = group
        with h5py.File(path, "r") as h5:
            self.names = sample_names(h5, group, limit)

    def __len__(self) -> int:
        return len(self.names)

    def batch_count(self, batch_size: int) -> int:
        """How many batches batches(batch_size) yields."""
        return -(-len(self.names) // batch_size)

    def batches(self, batch_size: int, prefetch: int = 2) -> Iterator[Batch]:
        """Yield (names, float32 array [N,C,H,W]) batches; reading runs one step ahead on a thread."""
        chunks = [self.names[i:i + batch_size] for i in range(0, len(self.names), batch_size)]
        slots = queue.Queue(maxsize=prefetch)  # type: queue.Queue
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                with h5py.File(self.path, "r") as h5:
                    group = h5[self.group]
                    for chunk in chunks:
                        if stop.is_set():
                            return
                        array = np.stack([np.asarray(group[name][()], dtype=np.float32) for name in chunk])
                        slots.put((chunk, array))
                slots.put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                slots.put(exc)

        thread = threading.Thread(target=produce, name="hdf5-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                item = slots.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Drain so that a producer blocked on put() sees `stop` and exits.
            while thread.is_alive():
                try:
                    slots.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()


def _with_errno(exc: OSError, path: str) -> OSError:
    """HDF5 reports a full disk as text inside a plain OSError: give it its errno and the file's name."""
    if exc.errno is None:
        match = re.search(r"errno = (\d+)", str(exc))
        if match:
            code = int(match.group(1))
            return OSError(code, os.strerror(code), path)
    return exc


class PredictionWriter:
    """Writes one float32 dataset per sample, named as the input sample, in arrival order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._h5 = h5py.File(path, "w", track_order=True)
        self.count = 0

    def write(self, names: Sequence[str], outputs: np.ndarray) -> None:
        try:
            for i, name in enumerate(names):
                self._h5.create_dataset(name, data=np.ascontiguousarray(outputs[i:i + 1], dtype=np.float32))
                self.count += 1
        except OSError as exc:
            raise _with_errno(exc, self.path) from exc

    def close(self) -> None:
        try:
            self._h5.close()
        except OSError as exc:
            raise _with_errno(exc, self.path) from exc

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
