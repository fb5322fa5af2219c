"""Sessions in memory, the train/val/test split, and batches of clips.

Samples and splits
------------------
A *segment* is a maximal run of bins with one block id and one split label
(:func:`~vivit_hpo.data.clips.segments`). A bin t is a *sample* (a target) for ``num_lags`` L
when its L-frame history lies inside its segment; its split is the split of its segment. So a
sample never spans two blocks and its frames never reach into another split: the targets of one
split never enter another, and neither do its frames. Where a block holds two splits (a seeded
split's chunks, or a file's ``split`` changing inside a block), the training segment keeps a
guard of L bins: no training target lies within L bins of a validation or test bin, which the
stimulus' and the responses' autocorrelation would otherwise make near copies of each other.

A batch holds *clips* (:mod:`vivit_hpo.data.clips`): ``F`` consecutive frames of one segment and
the targets the model predicts from them. ``F = L`` is the plain one-target-per-window sample.

When a file has no ``split``, whole split units are assigned by a seeded draw
(:func:`assign_split`): the blocks themselves, or, when a file has fewer than
``MIN_SPLIT_UNITS`` blocks (one long recording, say), contiguous chunks of
``data.split_chunk_s`` seconds (30 s by default; shorter when the recording would otherwise
give fewer than ``MIN_SPLIT_UNITS`` of them) cut out of its blocks, so that such a file still
gets a validation and a test part made of long stretches of time rather than scattered bins.
A file with a ``repeat`` dataset (a movie shown several times) has whole repeats assigned
instead (``data.split_by``, :mod:`vivit_hpo.data.repeats`).

Memory
------
``stim`` is read once, in its stored dtype, straight into one preallocated array (uint8 stays
uint8: a 51x51 movie of 500,000 frames is 1.3 GB, not 5.2 GB); frames become float32 only batch by
batch, after the clip is gathered. Clips are gathered by index arithmetic on the frame tensor,
``frames[starts[:, None] + arange(F)]``, on whatever device the frames live.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import torch
from einops import rearrange

from vivit_hpo.config import DataConfig
from vivit_hpo.data.clips import (
    ClipGeometry,
    capped_segments,
    clip_indices,
    eval_starts,
    segments,
    target_bins,
    train_starts,
)
from vivit_hpo.data.contract import read_name, read_response_kind
from vivit_hpo.data.repeats import repeat_units
from vivit_hpo.data.stream import StreamedFrames
from vivit_hpo.data.types import Batch, SessionMeta
from vivit_hpo.errors import DataError

__all__ = [
    "MIN_SPLIT_UNITS",
    "SPLITS",
    "Session",
    "SessionSet",
    "assign_split",
    "load_session",
    "read_split",
    "sample_mask",
    "split_units",
    "stimulus_stats",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
MIN_SPLIT_UNITS = 10
STIM_STAT_FRAMES = 2048  # frames of the training split a session's stimulus statistics read
_GIB = 2**30


# ----------------------------------------------------------------------------- pure index logic


def sample_mask(blocks: np.ndarray, split: np.ndarray, num_lags: int) -> np.ndarray:
    """(T,) bool: True where bin t has its whole ``num_lags`` history inside its segment (one
    block, one split; training segments keep a guard of ``num_lags`` bins from another split,
    see :func:`~vivit_hpo.data.clips.segments`)."""
    mask = np.zeros(blocks.shape[0], dtype=bool)
    mask[target_bins(segments(blocks, split, guard_lags=num_lags), num_lags)] = True
    return mask


def _run_ids(blocks: np.ndarray) -> np.ndarray:
    """(T,) index of the run (block) of equal consecutive values each bin lies in."""
    if blocks.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return (np.cumsum(np.r_[True, blocks[1:] != blocks[:-1]]) - 1).astype(np.int64)


def split_units(blocks: np.ndarray, frame_rate: float = 60.0, chunk_s: float = 30.0) -> np.ndarray:
    """(T,) int64 id of the unit of time a seeded split assigns whole.

    The units are the blocks (runs of equal ``blocks`` values). With fewer than
    ``MIN_SPLIT_UNITS`` blocks, each block is cut into contiguous chunks of about ``chunk_s``
    seconds, or of ``T // MIN_SPLIT_UNITS`` bins when that is shorter, so a single long
    recording still yields at least ``MIN_SPLIT_UNITS`` units to split. Samples never cross a
    chunk boundary once the chunks carry different split labels (segments are runs of one block
    and one split).
    """
    t = blocks.shape[0]
    run_id = _run_ids(blocks)
    n_runs = int(run_id[-1]) + 1 if t else 0
    if n_runs >= MIN_SPLIT_UNITS or t == 0:
        return run_id
    chunk = max(1, min(round(chunk_s * frame_rate), t // MIN_SPLIT_UNITS))
    out = np.empty(t, dtype=np.int64)
    next_id = 0
    ends = np.r_[np.flatnonzero(np.diff(run_id)) + 1, t]
    begin = 0
    for end in ends:
        n = end - begin
        k = max(1, round(n / chunk))
        # k nearly equal chunks covering [begin, end)
        out[begin:end] = next_id + (np.arange(n) * k) // n
        next_id += k
        begin = end
    return out


def assign_split(
    blocks: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    key: str = "",
    frame_rate: float = 60.0,
    chunk_s: float = 30.0,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """A seeded train/val/test label per bin that keeps each split unit whole.

    Units (:func:`split_units`, or ``units`` where given: a file's repeats) are shuffled with
    ``numpy.random.default_rng([seed, crc32(key)])`` (``key`` is the session name, so two
    sessions of the same shape get different draws), then laid end to end: a unit whose
    midpoint falls in the first ``test_fraction`` of the bins goes to test, the next
    ``val_fraction`` to validation, the rest to training. With 2 or more units validation gets
    at least one and training keeps at least one; with 3 or more, test gets one if
    ``test_fraction > 0``.

    Args:
        blocks: (T,) block id per bin.
        val_fraction, test_fraction: the share of bins to put in each.
        seed: the split seed (``DataConfig.split_seed``).
        key: mixed into the seed (the session name).
        frame_rate, chunk_s: bins per second and the chunk length of a file with few blocks.
        units: (T,) dense unit id of each bin (:func:`~vivit_hpo.data.repeats.repeat_units`),
            in place of the blocks or chunks.

    Returns:
        (T,) uint8, 0 train, 1 val, 2 test.
    """
    if units is None:
        units = split_units(np.asarray(blocks), frame_rate, chunk_s)
    t = units.shape[0]
    if t == 0:
        return np.zeros(0, dtype=np.uint8)
    n_units = int(units.max()) + 1
    lengths = np.bincount(units, minlength=n_units)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    order = rng.permutation(n_units)
    mid = np.cumsum(lengths[order]) - lengths[order] / 2
    label_in_order = np.where(
        mid < test_fraction * t, 2, np.where(mid < (test_fraction + val_fraction) * t, 1, 0)
    ).astype(np.uint8)
    if n_units >= 3 and test_fraction > 0 and not (label_in_order == 2).any():
        label_in_order[0] = 2
    if n_units >= 2 and not (label_in_order == 1).any():
        free = np.flatnonzero(label_in_order != 2)
        label_in_order[free[0] if free.size > 1 else n_units - 1] = 1
    if not (label_in_order == 0).any():
        label_in_order[-1] = 0
    labels = np.empty(n_units, dtype=np.uint8)
    labels[order] = label_in_order
    return labels[units]


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


# ----------------------------------------------------------------------------- one session


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
        _check_split(split)
        return self.segments[self.segments[:, 2] == _SPLIT_CODE[split], :2]

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


def read_frame_rate(f: h5py.File) -> float:
    """The ``frame_rate`` attribute of an open, valid session file, in bins per second."""
    return float(np.asarray(f.attrs["frame_rate"]).item())


def read_split(f: h5py.File, name: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The block and split label of each bin of an open, valid session file.

    Args:
        f: the open file.
        name: the session name (keys the seeded split).
        cfg: the split settings, used when the file has no ``split``.

    Returns:
        blocks (T,) int64 (zeros when absent), split (T,) uint8, and where the split came from:
        "file", "seeded" (blocks or chunks of time) or "seeded by repeat" (whole repeats:
        :func:`~vivit_hpo.data.repeats.repeat_units`).
    """
    t = int(f["robs"].shape[0])
    blocks = np.asarray(f["blocks"][()], dtype=np.int64) if "blocks" in f else np.zeros(t, np.int64)
    if "split" in f:
        return blocks, np.asarray(f["split"][()], dtype=np.uint8), "file"
    units = repeat_units(f, cfg)
    split = assign_split(
        blocks,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        key=name,
        frame_rate=read_frame_rate(f),
        chunk_s=cfg.split_chunk_s,
        units=units,
    )
    return blocks, split, "seeded" if units is None else "seeded by repeat"


def load_session(path: str | Path, cfg: DataConfig, *, stream: bool = False) -> Session:
    """Read one session file that :func:`~vivit_hpo.data.contract.validate_file` passed.

    The stimulus is read once with ``read_direct`` into a preallocated array of its stored dtype
    (or, with ``stream``, left in the file and read batch by batch); (T, H, W) becomes
    (T, 1, H, W) as a view. Counts become float32, ``dfs`` bool (all True when
    absent), behaviour is z-scored per channel with the training samples' mean and standard
    deviation (frames are kept as stored; their training statistics, :func:`stimulus_stats`, go
    in the meta and batches are standardised with them), ``blocks`` one block when absent, and
    ``split`` is drawn by :func:`assign_split` (``cfg.val_fraction``, ``cfg.test_fraction``,
    ``cfg.split_seed``, ``cfg.split_chunk_s``, keyed by the session name) when absent.

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
    tr = target_bins(segs[segs[:, 2] == _SPLIT_CODE["train"]], cfg.num_lags)
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
    train_segs = segs[segs[:, 2] == _SPLIT_CODE["train"]]
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


# ----------------------------------------------------------------------------- the set


def _fit_budget(device: torch.device) -> int:
    """Bytes of session data that may go on ``device`` under ``device_resident: auto``.

    Half of the free memory, and never less than 4 GiB left free, so the model, its activations
    and the optimizer state still fit.
    """
    free, _total = torch.cuda.mem_get_info(device)
    return max(0, min(free // 2, free - 4 * _GIB))


class SessionSet:
    """The sessions of a run, the samples they hold, and batches of clips.

    Batches come out on :attr:`device` (the device passed to :meth:`to`; CPU at first). Sessions
    whose data were moved there are gathered there; the others are gathered on the CPU in their
    stored dtype and only the gathered clips are copied over, before conversion to float32.

    Args:
        sessions: the loaded sessions (names unique).
        clips: the clip geometry of the batches (an ``int`` L: one target per window of L).
        device_resident: ``auto`` (move sessions to a CUDA device while they fit in half its
            free memory), ``on`` (move all, or fail), ``off`` (keep them on the CPU).
        center: subtract each session's training mean from its frames before the scaling by
            its std (``data.center``).
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        clips: ClipGeometry | int,
        *,
        device_resident: Literal["auto", "on", "off"] = "auto",
        device: torch.device | str = "cpu",
        center: bool = False,
    ) -> None:
        names = [s.name for s in sessions]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            files = [str(s.path) for s in sessions if s.name == dup[0]]
            raise DataError(
                f"{files[0]}: name: session name {dup[0]!r} is used by {len(files)} files "
                f"({', '.join(files)}); give each file a distinct `name` attribute"
            )
        self.sessions: list[Session] = list(sessions)
        self.clips = clips if isinstance(clips, ClipGeometry) else ClipGeometry.window(clips)
        self.device_resident: Literal["auto", "on", "off"] = device_resident
        self.device = torch.device(device)
        self.center = center
        self._by_name = {s.name: s for s in self.sessions}
        self._eval: dict[tuple[str, str, int | None, int], tuple[np.ndarray, np.ndarray]] = {}

    # --- description
    @property
    def num_lags(self) -> int:
        return self.clips.num_lags

    @property
    def metas(self) -> list[SessionMeta]:
        return [s.meta for s in self.sessions]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sessions]

    def __len__(self) -> int:
        return len(self.sessions)

    def session(self, name: str) -> Session:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no session {name!r}; have {self.names}") from None

    def num_samples(self, split: str) -> int:
        """Samples (target bins) of ``split`` ("train", "val" or "test") over all sessions."""
        return sum(s.num_samples(split, self.num_lags) for s in self.sessions)

    def sample_bins(self, name: str, split: str) -> np.ndarray:
        """(M,) int64 target bins of the samples of ``split`` in session ``name``, ascending."""
        return self.session(name).sample_bins(split, self.num_lags)

    def eval_segments(
        self, name: str, split: str, max_bins: int | None = None, seed: int = 0
    ) -> np.ndarray:
        """The (pseudo-)segments an evaluation of ``split`` in session ``name`` tiles: all of the
        split's, or with ``max_bins`` a seeded set of whole chunks of at most that many target
        bins (:func:`~vivit_hpo.data.clips.capped_segments`, seeded by ``seed`` and the
        session's name), the same whatever the clips or the batch size."""
        segs = self.session(name).split_segments(split)
        if max_bins is None:
            return segs
        return capped_segments(segs, self.num_lags, max_bins, [seed, zlib.crc32(name.encode())])

    def eval_clips(
        self, name: str, split: str, max_bins: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)`` of the clips that predict every sample of ``split`` once (of the
        capped subset with ``max_bins``, see :meth:`eval_segments`)."""
        key = (name, split, max_bins, seed if max_bins is not None else 0)
        if key not in self._eval:
            segs = self.eval_segments(name, split, max_bins, seed)
            self._eval[key] = eval_starts(segs, self.clips)
        return self._eval[key]

    def num_batches(self, split: str, batch_size: int) -> int:
        """Batches in one evaluation pass of :meth:`batches` over ``split``: sum over sessions of
        ceil(clips / batch_size), since a batch never mixes sessions."""
        return sum(-(-self.eval_clips(n, split)[0].size // batch_size) for n in self.names)

    def train_clips_per_pass(self, name: str) -> int:
        """Clips of one training pass over session ``name``: as many as it takes for the clips'
        targets to number the session's training samples."""
        return -(-self.session(name).num_samples("train", self.num_lags) // self.clips.num_targets)

    def num_train_batches(self, batch_size: int) -> int:
        """Batches of one training pass (see :meth:`batches` with ``shuffle=True``)."""
        return sum(-(-self.train_clips_per_pass(n) // batch_size) for n in self.names)

    def input_shape(self, name: str) -> tuple[int, int, int, int]:
        """(C, F, H, W) of one clip's stimulus in session ``name``."""
        m = self.session(name).meta
        return (m.num_channels, self.clips.frames, m.height, m.width)

    # --- variants
    def with_clips(self, clips: ClipGeometry) -> SessionSet:
        """The same sessions (shared, not copied) batched as ``clips``."""
        if clips.num_lags != self.num_lags:
            raise ValueError(
                f"clips of num_lags={clips.num_lags} on sessions loaded with {self.num_lags}"
            )
        return SessionSet(
            self.sessions,
            clips,
            device_resident=self.device_resident,
            device=self.device,
            center=self.center,
        )

    def standardised_as(self, metas: Sequence[SessionMeta]) -> SessionSet:
        """The same sessions, their frames standardised with the stimulus statistics of the
        same-named ``metas`` (a trained run's, so evaluating it feeds the model the numbers it
        was trained with); sessions not in ``metas`` keep their own."""
        stats = {m.name: (m.stim_mean, m.stim_std) for m in metas}
        sessions = [
            replace(
                s,
                meta=replace(s.meta, stim_mean=stats[s.name][0], stim_std=stats[s.name][1]),
            )
            if s.name in stats
            else s
            for s in self.sessions
        ]
        return SessionSet(
            sessions,
            self.clips,
            device_resident=self.device_resident,
            device=self.device,
            center=self.center,
        )

    def to(self, device: torch.device | str) -> SessionSet:
        """A set whose batches come out on ``device``; data move there as ``device_resident`` says.

        Raises:
            DataError: ``device_resident: on`` and the data do not fit on the device.
        """
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        moved: list[Session] = []
        if dev.type == "cpu" or self.device_resident == "off":
            moved = [s.to("cpu") for s in self.sessions]
        elif self.device_resident == "on":
            try:
                moved = [s.to(dev) for s in self.sessions]
            except torch.OutOfMemoryError as e:
                need = sum(s.nbytes() for s in self.sessions) / _GIB
                raise DataError(
                    f"data.device_resident: on, but the sessions ({need:.1f} GiB) do not fit on "
                    f"{dev}; set data.device_resident=auto or off"
                ) from e
        else:  # auto
            budget = _fit_budget(dev) if dev.type == "cuda" else 0
            for s in self.sessions:
                if s.nbytes() <= budget:
                    moved.append(s.to(dev))
                    budget -= s.nbytes()
                else:
                    moved.append(s.to("cpu"))
        return SessionSet(
            moved, self.clips, device_resident=self.device_resident, device=dev, center=self.center
        )

    def resident(self) -> dict[str, str]:
        """Session name -> device its data live on."""
        return {s.name: str(s.device) for s in self.sessions}

    # --- batches
    def batch(
        self,
        name: str,
        starts: np.ndarray | torch.Tensor | Sequence[int],
        ends: np.ndarray | None = None,
    ) -> Batch:
        """Gather the clips that start at ``starts`` in session ``name``.

        Args:
            name: the session.
            starts: (B,) first bin of each clip; each must lie in a segment with at least one
                target from there (``start <= segment end - num_lags``).
            ends: (B,) the end of each start's segment, when the caller knows it.

        Returns:
            A :class:`Batch` on :attr:`device`: stim (B, C, F, H, W) float32, ``frames /
            stim_std`` (``(frames - stim_mean) / stim_std`` with :attr:`center`) with the
            session meta's training statistics; behavior
            (B, F, K) or None; robs and dfs (B, P, N) float32 (dfs 0 at targets past the
            segment's end); bins (B, P) int64 (-1 at those targets).
        """
        s = self.session(name)
        c = (
            starts.detach().cpu().numpy()
            if isinstance(starts, torch.Tensor)
            else np.asarray(starts)
        ).astype(np.int64, copy=False)
        if ends is None:
            ends = self._segment_ends(s, c)
        frame_idx, target_idx, valid = clip_indices(c, ends, self.clips)
        src = s.device
        idx = torch.from_numpy(frame_idx)  # (B, F)
        tgt = torch.from_numpy(target_idx)  # (B, P)
        if src.type == "cuda":
            # From pinned memory the copy is asynchronous: no stream sync per batch.
            idx = idx.pin_memory().to(src, non_blocking=True)
            tgt = tgt.pin_memory().to(src, non_blocking=True)
        x = self._move(s.frames[idx])  # (B, F, C, H, W), stored dtype
        x = rearrange(x, "b f c h w -> b c f h w")
        stim = x.to(torch.float32, memory_format=torch.contiguous_format)  # (B, C, F, H, W)
        # Scaled by the session's training-split std, so sessions stored as uint8 0..255, float
        # 0..1 or float 0..255 reach the shared core at one scale (x is a fresh gather, never
        # the session's own frames: in place is safe). Centred only where the run says so
        # (data.center): uncentred, the mean luminance stays a positive offset and the ViViT's
        # per-token norms keep each token's contrast amplitude (centred, the tiny ViViT of
        # tests/training/test_loop.py learned slower: +0.026 against over +0.03 val BPS after
        # 240 steps); the CNN and LN yardsticks learn faster centred.
        if self.center:
            stim.sub_(s.meta.stim_mean)
        stim.div_(s.meta.stim_std)
        beh = None
        if s.behavior is not None:
            beh = self._move(s.behavior[idx])  # (B, F, K)
        dfs = self._move(s.dfs[tgt]).to(torch.float32)  # (B, P, N)
        if not valid.all():
            dfs = dfs * self._move(torch.from_numpy(valid)).to(torch.float32)[..., None]
        return Batch(
            session=name,
            stim=stim,
            behavior=beh,
            robs=self._move(s.robs[tgt]).to(torch.float32),  # (B, P, N)
            dfs=dfs,
            bins=self._move(torch.from_numpy(np.where(valid, target_idx, -1))),
            num_targets=int(valid.sum()),
        )

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on :attr:`device`; from the CPU to a GPU through pinned memory, asynchronously
        (the batch is usually gathered in a prefetch thread while the step runs)."""
        if t.device == self.device:
            return t
        if self.device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _segment_ends(self, s: Session, starts: np.ndarray) -> np.ndarray:
        """The end of the segment of each start; ValueError for a start with no target."""
        if starts.ndim != 1:
            raise ValueError("starts must be (B,)")
        seg = np.searchsorted(s.segments[:, 0], starts, side="right") - 1
        bad = (seg < 0) | (starts >= s.num_bins)
        seg = np.clip(seg, 0, len(s.segments) - 1)
        ends = s.segments[seg, 1]
        bad |= starts > ends - self.num_lags
        if bad.any():
            first = int(starts[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"clip start {first} of session {s.name!r} has no target: a clip must start "
                f"at least num_lags={self.num_lags} bins before the end of its segment (one "
                "block, one split)"
            )
        return ends

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        steps: int | None = None,
        max_bins: int | None = None,
    ) -> Iterator[Batch]:
        """Batches of clips of one split; each batch holds clips of one session only.

        With ``shuffle=False`` (evaluation) the sessions come in order, each tiled by
        :meth:`eval_clips` so that every sample of the split is predicted exactly once;
        ``max_bins`` keeps, per session, whole chunks of at most that many samples drawn with
        ``seed`` and spread over the whole split (:meth:`eval_segments`: the same bins for the
        same seed whatever the batch size or clip geometry), every sample in them predicted
        exactly once, and ``steps`` stops after that many batches in all.

        With ``shuffle=True`` (training) each session gets :meth:`train_clips_per_pass` clips
        at random starts (without replacement where it has that many), cut into batches, and
        the batches of all sessions are shuffled together, so sessions interleave at random in
        proportion to their sample counts; everything is drawn from
        ``numpy.random.default_rng(seed)``, so the same seed gives the same batches. ``steps``
        gives exactly that many batches, starting further passes with fresh draws when one pass
        holds fewer.

        Args:
            split: "train", "val" or "test".
            batch_size: clips per batch (a session's last batch of a pass may be smaller).
            shuffle: training order (True) or evaluation order (False).
            seed: the shuffle seed, and the seed of the ``max_bins`` subset
                (``DataConfig.split_seed`` for a study's validation).
            steps: see above; None for one pass.
            max_bins: see above (evaluation only).

        Yields:
            :class:`Batch` on :attr:`device`.
        """
        _check_split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if steps is not None and steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        if not shuffle:
            done = 0
            for s in self.sessions:
                starts, ends = self.eval_clips(s.name, split, max_bins, seed)
                for i in range(0, starts.size, batch_size):
                    if steps is not None and done >= steps:
                        return
                    yield self.batch(s.name, starts[i : i + batch_size], ends[i : i + batch_size])
                    done += 1
            return
        pools = {s.name: train_starts(s.split_segments(split), self.clips) for s in self.sessions}
        if not any(p[0].size for p in pools.values()):
            return
        rng = np.random.default_rng(seed)
        done = 0
        while True:
            plan: list[tuple[str, np.ndarray, np.ndarray]] = []
            for s in self.sessions:
                starts, ends = pools[s.name]
                if not starts.size:
                    continue
                n = self.train_clips_per_pass(s.name) if split == "train" else starts.size
                pick = rng.choice(starts.size, size=n, replace=n > starts.size)
                plan.extend(
                    (s.name, starts[pick[i : i + batch_size]], ends[pick[i : i + batch_size]])
                    for i in range(0, n, batch_size)
                )
            for j in rng.permutation(len(plan)):
                if steps is not None and done >= steps:
                    return
                name, starts, ends = plan[j]
                yield self.batch(name, starts, ends)
                done += 1
            if steps is None:
                return


def _check_split(split: str) -> None:
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r}; use one of {SPLITS}")
