"""A new stimulus for a trained model: a movie (and behaviour) with no recorded spikes.

``vivit-hpo predict`` runs a trained model on a stimulus file to get the predicted rates of a
session's units: the in-silico experiment. The file holds ``stim`` as a session file does
((T, H, W) or (T, C, H, W); uint8, float16 or float32), and optionally ``behavior`` (T, K),
``blocks`` (T,) and the ``frame_rate`` attribute; anything else (``robs`` of a real session,
say) is ignored. The frames must have the session's size and channels, and are standardised
with the session's own training statistics (``meta.stim_mean``, ``meta.stim_std``, the numbers
the model was trained with, so the movie must be stored in the session's units); behaviour is
standardised with the session's own training statistics, and a stimulus without behaviour for
a session with behaviour is fed the session's mean behaviour (zeros once standardised).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from vivit_hpo.data.clips import segments
from vivit_hpo.data.contract import STIM_DTYPES, read_frame_rate
from vivit_hpo.data.session_file import Session
from vivit_hpo.data.stream import StreamedFrames
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import DataError

__all__ = ["PREDICT_SPLIT", "load_stimulus"]

PREDICT_SPLIT = "test"  # the split label every bin of a stimulus gets (the one predict tiles)


def _fail(path: Path, key: str, what: str) -> DataError:
    return DataError(f"{path}: {key}: {what}")


def load_stimulus(path: str | Path, meta: SessionMeta, *, stream: bool = False) -> Session:
    """Read a stimulus file as a :class:`Session` of ``meta``'s units with no counts.

    Every bin is in one split (:data:`PREDICT_SPLIT`), so evaluation clips tile every block;
    ``robs`` and ``dfs`` are zeros.

    Raises:
        DataError: one line naming the file, the dataset and the fix: no ``stim``, a frame size
            or channel count other than the session's, behaviour of another width, a frame rate
            other than the session's, or a ``blocks`` of the wrong length.
    """
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        raise _fail(path, "file", "not an HDF5 file; pass a file with a `stim` dataset")
    with h5py.File(path, "r") as f:
        ds = f.get("stim")
        if not isinstance(ds, h5py.Dataset) or ds.ndim not in (3, 4):
            raise _fail(path, "stim", "missing or not (T, H, W) / (T, C, H, W); store the movie")
        if ds.dtype not in STIM_DTYPES:
            raise _fail(path, "stim", f"dtype {ds.dtype}; store uint8, float16 or float32")
        t = int(ds.shape[0])
        c = 1 if ds.ndim == 3 else int(ds.shape[1])
        h, w = int(ds.shape[-2]), int(ds.shape[-1])
        want = (meta.num_channels, meta.height, meta.width)
        if (c, h, w) != want:
            raise _fail(
                path,
                "stim",
                f"frames of {c}x{h}x{w} (C x H x W), but session {meta.name!r} was trained on "
                f"{want[0]}x{want[1]}x{want[2]}; resample the movie to the session's frames",
            )
        if "frame_rate" in f.attrs and abs(read_frame_rate(f) - meta.frame_rate) > 1e-6:
            raise _fail(
                path,
                "frame_rate",
                f"{read_frame_rate(f):g} Hz, but session {meta.name!r} was recorded at "
                f"{meta.frame_rate:g} Hz; resample the movie to {meta.frame_rate:g} Hz",
            )
        frames: torch.Tensor | StreamedFrames
        if stream:
            frames = StreamedFrames(path)
        else:
            frames = torch.from_numpy(np.asarray(ds[()]))
            if frames.ndim == 3:
                frames = frames.unsqueeze(1)
        blocks = np.zeros(t, np.int64)
        if "blocks" in f:
            blocks = np.asarray(f["blocks"][()], dtype=np.int64)
            if blocks.shape != (t,):
                raise _fail(path, "blocks", f"shape {blocks.shape}; store one id per frame ({t},)")
        behavior: torch.Tensor | None = None
        k = meta.num_behavior
        if k:
            if "behavior" in f:
                raw = np.asarray(f["behavior"][()], dtype=np.float32)
                if raw.shape != (t, k):
                    raise _fail(
                        path,
                        "behavior",
                        f"shape {raw.shape}, but session {meta.name!r} has {k} behaviour "
                        f"channels; store ({t}, {k}) in the session's channel order",
                    )
                if len(meta.behavior_mean) != k:
                    raise _fail(
                        path,
                        "behavior",
                        "the run does not record its behaviour statistics (trained by an older "
                        "version); retrain it to predict with behaviour",
                    )
                mean = torch.tensor(meta.behavior_mean)
                std = torch.tensor(meta.behavior_std)
                behavior = (torch.from_numpy(raw) - mean) / std
            else:
                behavior = torch.zeros(t, k)  # the session's mean behaviour, standardised
    split = np.full(t, {"train": 0, "val": 1, "test": 2}[PREDICT_SPLIT], dtype=np.uint8)
    n = meta.num_units
    return Session(
        meta=meta,
        path=path,
        frames=frames,
        robs=torch.zeros(t, n),
        dfs=torch.zeros(t, n, dtype=torch.bool),
        behavior=behavior,
        behavior_names=(),
        blocks=blocks,
        split=split,
        segments=segments(blocks, split),
    )
