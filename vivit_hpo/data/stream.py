"""Sessions larger than memory: frames read from the file on demand, batches prepared ahead.

:class:`StreamedFrames` stands in for a session's in-memory frame tensor: indexing it with a
(B, F) tensor of frame indices (the rows of a batch of clips, each a run of consecutive frames)
reads just those frames from the session file, one contiguous read per clip, through an HDF5
chunk cache of bounded size. So a session's resident memory is its counts, masks and behaviour,
not its stimulus.

:func:`prefetch` runs a batch iterator in a background thread, a few batches ahead, so a
training step does not wait on the disk (or on the gather and the copy to the GPU).

:func:`stream_plan` decides which sessions of a run stream under ``data.stream: auto``: the ones
whose stimuli would not fit, in file order, in the host-memory budget.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import torch

__all__ = ["StreamedFrames", "host_memory_budget", "prefetch", "stim_nbytes", "stream_plan"]

T = TypeVar("T")
_CHUNK_CACHE_BYTES = 64 * 2**20  # HDF5's cache of decompressed chunks, per open file
_NUMPY_TO_TORCH = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
}


class StreamedFrames:
    """A session's frames, read from its file on demand: (T, C, H, W) in the stored dtype.

    Supports what a batch needs of a frame tensor: ``shape``, ``dtype``, ``device`` (the CPU)
    and indexing with a (B, F) integer tensor whose rows are non-decreasing runs of frames (a
    clip, its last frame repeated past its segment's end), returning (B, F, C, H, W).

    Args:
        path: the session file.
        dataset: the stimulus dataset.
    """

    def __init__(self, path: str | Path, dataset: str = "stim") -> None:
        self.path = Path(path)
        self.dataset = dataset
        self._file: h5py.File | None = None
        self._pid = -1
        self._lock = threading.Lock()
        ds = self._ds()
        shape = tuple(int(x) for x in ds.shape)
        self.shape = torch.Size(shape if len(shape) == 4 else (shape[0], 1, *shape[1:]))
        self.dtype = _NUMPY_TO_TORCH[np.dtype(ds.dtype)]
        self._np_dtype = np.dtype(ds.dtype)
        self.device = torch.device("cpu")

    def _ds(self) -> h5py.Dataset:
        # One handle per process (a forked child must not share its parent's HDF5 state).
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            self._pid = os.getpid()
        ds = self._file[self.dataset]
        assert isinstance(ds, h5py.Dataset)
        return ds

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, F) frame indices -> (B, F, C, H, W) frames, one contiguous read per row."""
        rows = idx.detach().cpu().numpy()
        b, f = rows.shape
        out = np.empty((b, f, *self.shape[1:]), dtype=self._np_dtype)
        with self._lock:
            ds = self._ds()
            for i in range(b):
                lo, hi = int(rows[i, 0]), int(rows[i, -1]) + 1
                block = ds[lo:hi]  # (hi - lo, [C,] H, W)
                if block.ndim == 3:
                    block = block[:, None]
                out[i] = block[rows[i] - lo]
        return torch.from_numpy(out)

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"], state["_lock"] = None, -1, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def stim_nbytes(path: str | Path) -> int:
    """Bytes of a session file's stimulus in memory (its stored dtype), from the header."""
    with h5py.File(path, "r") as f:
        ds = f["stim"]
        return int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize


def host_memory_budget(gb: float | None) -> int:
    """Bytes of stimulus that may be held in host memory: ``gb``, else half of the memory the
    system reports available now."""
    if gb is not None:
        return int(gb * 2**30)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def stream_plan(sizes: Sequence[int], mode: str, budget: int) -> list[bool]:
    """Which sessions stream: all (``on``), none (``off``), or under ``auto`` those that do not
    fit, in order, in ``budget`` bytes (the ones that fit are read into memory)."""
    if mode == "on":
        return [True] * len(sizes)
    if mode == "off":
        return [False] * len(sizes)
    out = []
    for n in sizes:
        fits = n <= budget
        out.append(not fits)
        if fits:
            budget -= n
    return out


_END = object()


def prefetch(it: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``it`` in a background thread, up to ``depth`` items ahead.

    The items come in the same order; an exception raised by ``it`` is raised here; closing
    this generator (or breaking out of the loop) stops the thread after at most one item.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in it:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
