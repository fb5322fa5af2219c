"""Stimulus frames in the contract's layout, read by chunks from an NWB series or a template.

:class:`Frames` wraps a movie stored as ``(F, H, W)`` or ``(F, H, W, C<=4)`` (an h5py dataset, a
memory-mapped ``.npy`` or an array) and reads any set of its frames in the contract's layout and
dtype; :func:`write_stim` streams the frames that the bins show into a session file by chunks of
about 32 MiB, so that a movie (or its repeats) is never held whole in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from vivit_hpo.errors import DataError

__all__ = ["FrameStack", "Frames", "write_stim"]

_CHUNK_BYTES = 32 * 2**20


class Frames:
    """Stimulus frames in the contract's layout, read by sets of frames.

    ``data`` is the series' frames as stored ((F, H, W) or (F, H, W, C)); for an IndexSeries
    ``lookup`` maps each frame to a row of ``data`` (the template images, in memory).
    """

    def __init__(self, data: Any, *, lookup: np.ndarray | None = None, what: str) -> None:
        shape: tuple[int, ...] = tuple(int(x) for x in data.shape)
        if len(shape) == 3:
            self.channels_last = False
        elif len(shape) == 4 and 1 <= shape[3] <= 4:
            self.channels_last = True
        else:
            raise DataError(
                f"{what}: frames of shape {shape} are not (frames, height, width) or (frames, "
                "height, width, channels <= 4); store the movie in one of these layouts"
            )
        self.data = data
        self.lookup = lookup
        self.num_frames = int(lookup.shape[0]) if lookup is not None else shape[0]
        h, w = shape[1], shape[2]
        self.frame_shape: tuple[int, ...] = (shape[-1], h, w) if self.channels_last else (h, w)
        src = np.dtype(data.dtype)
        if src in (np.uint8, np.float16, np.float32):
            self.dtype = src
        elif src == np.bool_:
            self.dtype = np.dtype(np.uint8)
        elif src.kind in "iuf":
            self.dtype = np.dtype(np.float32)
        else:
            raise DataError(f"{what}: frames of dtype {src} are not numbers; store pixel values")

    def rows_per_chunk(self) -> int:
        frame_bytes = int(np.prod(self.frame_shape)) * max(4, self.dtype.itemsize)
        return max(1, _CHUNK_BYTES // frame_bytes)

    def read(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), *frame_shape) frames ``idx`` (any order, repeats allowed), output dtype.

        Reads one slice of the source when the frames lie close together (a run of a movie, or
        every other frame of one), else only the distinct frames asked for (a shuffled movie).
        """
        idx = np.asarray(idx, dtype=np.int64)
        if self.lookup is not None:
            x = np.asarray(self.data)[self.lookup[idx]]
        else:
            a, b = int(idx.min()), int(idx.max()) + 1
            if np.array_equal(idx, np.arange(a, b)):
                x = np.asarray(self.data[a:b])
            else:
                uniq, inv = np.unique(idx, return_inverse=True)
                if b - a <= max(2 * uniq.size, self.rows_per_chunk()):
                    x = np.asarray(self.data[a:b])[idx - a]
                else:  # a sorted list of distinct rows (what h5py's fancy reads take)
                    x = np.asarray(self.data[uniq])[inv]
        if self.channels_last:
            x = np.moveaxis(x, -1, 1)  # (n, H, W, C) -> (n, C, H, W)
        if x.dtype == np.bool_:
            return x.astype(np.uint8) * np.uint8(255)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest pixel value over all frames, in the output dtype's units."""
        lo, hi = np.inf, -np.inf
        rows = self.rows_per_chunk()
        n = int(self.data.shape[0])
        for a in range(0, n, rows):
            x = self.read(np.arange(a, min(n, a + rows)))
            lo, hi = min(lo, float(np.nanmin(x))), max(hi, float(np.nanmax(x)))
        return lo, hi


class FrameStack:
    """Several templates of one frame shape and dtype read as one source.

    Frame ``i`` of the stack is frame ``i - starts[k]`` of part ``k`` (the parts in order).
    """

    def __init__(self, parts: Sequence[Frames]) -> None:
        assert parts and len({(p.frame_shape, p.dtype) for p in parts}) == 1
        self.parts = list(parts)
        self.frame_shape = parts[0].frame_shape
        self.dtype = parts[0].dtype
        self.starts = np.cumsum([0, *(p.num_frames for p in parts)])

    def rows_per_chunk(self) -> int:
        return self.parts[0].rows_per_chunk()

    def read(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), *frame_shape) frames ``idx`` of the stack, in any order."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((idx.shape[0], *self.frame_shape), dtype=self.dtype)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(part).tolist():
            m = part == k
            out[m] = self.parts[k].read(idx[m] - self.starts[k])
        return out


def write_stim(
    f: h5py.File,
    frames: Frames | FrameStack,
    index: np.ndarray,
    *,
    grey: float | None = None,
) -> None:
    """Stream frames ``index`` into a contiguous ``stim`` dataset, a chunk at a time.

    Args:
        f: the session file being written.
        frames: the source frames.
        index: (T,) int, the source frame of each bin; -1 where the bin shows a uniform
            ``grey`` frame (a blank screen between presentations).
        grey: the pixel value of a grey frame (needed when ``index`` holds -1).
    """
    index = np.asarray(index, dtype=np.int64)
    t = index.shape[0]
    ds = f.create_dataset("stim", shape=(t, *frames.frame_shape), dtype=frames.dtype)
    rows = frames.rows_per_chunk()
    for k0 in range(0, t, rows):
        idx = index[k0 : k0 + rows]
        shown = idx >= 0
        if shown.all():
            ds[k0 : k0 + idx.shape[0]] = frames.read(idx)
            continue
        assert grey is not None, "grey frames need a grey value"
        x = np.empty((idx.shape[0], *frames.frame_shape), dtype=frames.dtype)
        x[~shown] = np.asarray(grey, dtype=frames.dtype)
        if shown.any():
            x[shown] = frames.read(idx[shown])
        ds[k0 : k0 + idx.shape[0]] = x
