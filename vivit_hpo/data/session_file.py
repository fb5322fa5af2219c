"""One session file read into memory: :class:`Session`, :func:`load_session`, and the stimulus
statistics that batches are standardised with.

``stim`` is read once, in its stored dtype, straight into one preallocated array (uint8 stays
uint8: a 51x51 movie of 500,000 frames is 1.3 GB, not 5.2 GB); frames become float32 only batch by
batch, after the clip is gathered (:meth:`~vivit_hpo.data.session.SessionSet.batch`). The split
and the samples come from :mod:`vivit_hpo.data.split`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from vivit_hpo.config import DataConfig
from vivit_hpo.data.clips import segments, target_bins
from vivit_hpo.data.contract import read_frame_rate, read_name, read_response_kind
from vivit_hpo.data.split import SPLIT_CODE, check_split, read_split
from vivit_hpo.data.stream import StreamedFrames
from vivit_hpo.data.types import SessionMeta

__all__ = ["STIM_STAT_FRAMES", "Session", "load_session", "stimulus_stats"]

STIM_STAT_FRAMES = 2048  # frames of the training split a session's stimulus statistics read


def stimulus_stats(frames: torch.Tensor | StreamedFrames, bins: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the stimulus over ``bins``, all pixels and channels.

    Computed from at most :data:`STIM_STAT_FRAMES` of the bins, evenly strided over them (a
    long or streamed session reads just those frames; the same file gives the same numbers
    streamed or in memory), in float64, in the stored units. A constant stimulus gets std 1.

    Args:
        frames: (T, C, H, W) in memory, or streamed from the file.
        bins: (M,) the bins to describe (a session's training bins).

    Returns:
        (mean, std); (0, 1) when ``bins`` is empty.
    """
    if bins.size == 0:
        return 0.0, 1.0
    pick = np.asarray(bins, dtype=np.int64)[:: -(-bins.size // STIM_STAT_FRAMES)]
    n, mean, m2 = 0, 0.0, 0.0
    for i in range(0, pick.size, 256):  # chunks, combined exactly (Chan et al.)
        x = frames[torch.from_numpy(pick[i : i + 256])[:, None]].to(torch.float64)
        var_k, mean_k = torch.var_mean(x, correction=0)
        k = x.numel()
        delta = float(mean_k) - mean
        mean += delta * k / (n + k)
        m2 += float(var_k) * k + delta * delta * n * k / (n + k)
        n += k
    std = (m2 / n) ** 0.5
    return mean, std if std > 1e-12 * max(1.0, abs(mean)) else 1.0


@dataclass(frozen=True)
class Session:
    """One session held in memory (CPU or GPU).

    Attributes:
        meta: what the model needs to know of it (name, units, frame size, K, mean rates).
        path: the file it was read from.
        frames: (T, C, H, W) the stimulus in its stored dtype (uint8, float16 or float32), in
            memory, or :class:`~vivit_hpo.data.stream.StreamedFrames` read from the file.
        robs: (T, N) counts in a compact dtype (uint8, int16 or int32 for whole counts, float32
            otherwise); batches carry them as float32.
        dfs: (T, N) bool, True where a count is valid.
        behavior: (T, K) float32, or None.
        behavior_names: K names (from the file, else ``behavior_0..``).
        blocks: (T,) int64 block id per bin (numpy, CPU).
        split: (T,) uint8 split label per bin (numpy, CPU).
        segments: (S, 3) int64 ``(start, end, split code)`` of every run of one block and one
            split, training runs less their guard (numpy, CPU); samples and clips never cross
            their edges.
    """

    meta: SessionMeta
    path: Path
    frames: torch.Tensor | StreamedFrames
    robs: torch.Tensor
    dfs: torch.Tensor
    behavior: torch.Tensor | None
    behavior_names: tuple[str, ...]
    blocks: np.ndarray
    split: np.ndarray
    segments: np.ndarray

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def device(self) -> torch.device:
        return self.frames.device

    @property
    def num_bins(self) -> int:
        return int(self.frames.shape[0])

    @property
    def streamed(self) -> bool:
        """True when the frames are read from the file batch by batch."""
        return isinstance(self.frames, StreamedFrames)

    def split_segments(self, split: str) -> np.ndarray:
        """(S, 2) ``(start, end)`` of the segments of ``split``, in time order."""
        check_split(split)
        return self.segments[self.segments[:, 2] == SPLIT_CODE[split], :2]

    def sample_bins(self, split: str, num_lags: int) -> np.ndarray:
        """(M,) ascending target bins of ``split``: bins with L frames of history in their
        segment."""
        return target_bins(self.split_segments(split), num_lags)

    def num_samples(self, split: str, num_lags: int) -> int:
        lengths = np.diff(self.split_segments(split), axis=1)
        return int(np.maximum(lengths - num_lags + 1, 0).sum())

    def nbytes(self) -> int:
        """Bytes of the tensors that :meth:`to` moves (streamed frames stay in the file)."""
        ts = [self.robs, self.dfs] + ([self.behavior] if self.behavior is not None else [])
        if isinstance(self.frames, torch.Tensor):
            ts.append(self.frames)
        return sum(t.numel() * t.element_size() for t in ts)

    def to(self, device: torch.device | str) -> Session:
        """A copy whose tensors live on ``device`` (frames keep their dtype; a streamed
        session stays on the CPU, its batches are copied over)."""
        if isinstance(self.frames, StreamedFrames):
            device = "cpu"
        return replace(
            self,
            frames=self.frames
            if isinstance(self.frames, StreamedFrames)
            else self.frames.to(device),
            robs=self.robs.to(device),
            dfs=self.dfs.to(device),
            behavior=None if self.behavior is None else self.behavior.to(device),
        )


def _read_attr_list(f: h5py.File, key: str) -> list[str] | None:
    raw = f.attrs.get(key)
    if raw is None:
        return None
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(raw).ravel()]


def _compact_counts(robs: np.ndarray) -> np.ndarray:
    """Counts in the smallest dtype that holds them: whole counts (integer or integral floats)
    as uint8 / int16 / int32, others as float32 (a long session's counts stay small)."""
    if robs.dtype.kind == "f" and not np.array_equal(robs, np.round(robs)):
        return robs.astype(np.float32, copy=False)
    top = robs.max() if robs.size else 0
    for dtype in (np.uint8, np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return robs.astype(dtype, copy=False)
    return robs.astype(np.float32)


def load_session(path: str | Path, cfg: DataConfig, *, stream: bool = False) -> Session:
    """Read one session file that :func:`~vivit_hpo.data.contract.validate_file` passed.

    The stimulus is read once with ``read_direct`` into a preallocated array of its stored dtype
    (or, with ``stream``, left in the file and read batch by batch); (T, H, W) becomes
    (T, 1, H, W) as a view. Counts become float32, ``dfs`` bool (all True when
    absent), behaviour is z-scored per channel with the training samples' mean and standard
    deviation (frames are kept as stored; their training statistics, :func:`stimulus_stats`, go
    in the meta and batches are standardised with them), ``blocks`` one block when absent, and
    ``split`` is drawn by :func:`~vivit_hpo.data.split.assign_split` (``cfg.val_fraction``,
    ``cfg.test_fraction``, ``cfg.split_seed``, ``cfg.split_chunk_s``, keyed by the session name)
    when absent.

    Args:
        path: the session file.
        cfg: ``num_lags`` and the split settings.
        stream: read the frames from the file on demand (sessions larger than memory).

    Returns:
        The session on the CPU.
    """
    path = Path(path)
    frames: torch.Tensor | StreamedFrames
    with h5py.File(path, "r") as f:
        name = read_name(f, path)
        if stream:
            frames = StreamedFrames(path)
        else:
            ds = f["stim"]
            stim = np.empty(ds.shape, dtype=ds.dtype)
            if stim.size:
                ds.read_direct(stim)
            frames = torch.from_numpy(stim)
            if frames.ndim == 3:
                frames = frames.unsqueeze(1)  # (T, 1, H, W), a view
        robs_np = _compact_counts(np.asarray(f["robs"][()]))
        t, n = robs_np.shape
        dfs_np = np.asarray(f["dfs"][()]) > 0 if "dfs" in f else np.ones((t, n), dtype=bool)
        behavior: torch.Tensor | None = None
        names: tuple[str, ...] = ()
        if "behavior" in f:
            behavior = torch.from_numpy(np.asarray(f["behavior"][()], dtype=np.float32))
            k = behavior.shape[1]
            got = _read_attr_list(f, "behavior_names")
            names = tuple(got) if got is not None else tuple(f"behavior_{i}" for i in range(k))
        blocks, split, _ = read_split(f, name, cfg)
        frame_rate = read_frame_rate(f)
        response_kind = read_response_kind(f)

    segs = segments(blocks, split, guard_lags=cfg.num_lags)
    tr = target_bins(segs[segs[:, 2] == SPLIT_CODE["train"]], cfg.num_lags)
    beh_mean: tuple[float, ...] = ()
    beh_std: tuple[float, ...] = ()
    if behavior is not None and tr.size:
        # z-score each channel with training-bin statistics: files store behaviour in their own
        # units (degrees, cm/s, pixels), and the modulator's gain expects unit-scale input.
        train_beh = behavior[torch.from_numpy(tr)]
        mean, std = train_beh.mean(0), train_beh.std(0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        behavior = (behavior - mean) / std
        beh_mean, beh_std = tuple(mean.tolist()), tuple(std.tolist())
    train_segs = segs[segs[:, 2] == SPLIT_CODE["train"]]
    stim_mean, stim_std = stimulus_stats(
        frames, np.concatenate([np.arange(a, b) for a, b, _ in train_segs] or [tr])
    )
    valid_train = dfs_np[tr]
    n_valid = valid_train.sum(0)
    spikes = np.where(valid_train, robs_np[tr], 0.0).sum(0, dtype=np.float64)
    mean_rates = np.where(n_valid > 0, spikes / np.maximum(n_valid, 1), 0.0)
    meta = SessionMeta(
        name=name,
        num_units=n,
        num_channels=int(frames.shape[1]),
        height=int(frames.shape[2]),
        width=int(frames.shape[3]),
        num_behavior=0 if behavior is None else int(behavior.shape[1]),
        frame_rate=frame_rate,
        mean_rates=tuple(float(x) for x in mean_rates),
        behavior_mean=beh_mean,
        behavior_std=beh_std,
        behavior_names=names,
        stim_mean=stim_mean,
        stim_std=stim_std,
        response_kind=response_kind,
    )
    return Session(
        meta=meta,
        path=path,
        frames=frames,
        robs=torch.from_numpy(robs_np),
        dfs=torch.from_numpy(dfs_np),
        behavior=behavior,
        behavior_names=names,
        blocks=blocks,
        split=split,
        segments=segs,
    )
