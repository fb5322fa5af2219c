"""Importing an NWB recording (a movie, its spike-sorted units, behaviour) as a session file.

The mapping (``vivit-hpo data import-nwb``; README "Your own recordings"):

- **stimulus**: the ImageSeries, OpticalSeries or IndexSeries called NAME anywhere in the file
  (``stimulus``, ``acquisition`` or a processing module; by default the only one, leaving out
  imaging series and the template series an IndexSeries points at). Frames come from ``data``
  (``(frames, H, W)``, or ``(frames, H, W, C)`` with C <= 4, written as ``(T, C, H, W)``), or,
  for an IndexSeries, from the images it indexes (an ``Images`` container, in
  ``order_of_images`` order, or a template ImageSeries). uint8 frames stay uint8, float16 and
  float32 as stored, float64 becomes float32, bool becomes 0/255 and other integers float32 as
  stored. Frame times come from ``timestamps`` or ``starting_time + i / rate``.
- **bins** (:func:`frame_bins`): bin i runs from frame i's time to frame i+1's. The last bin,
  and the last bin before a *gap* (an interval longer than ``GAP_FACTOR`` = 1.5 times the median
  frame interval), ends one median interval after its frame. ``frame_rate`` is the series'
  ``rate`` when it is timed by one, else 1 / the median frame interval (for irregular frame
  times, the typical rate, not the mean). With a target rate (:func:`resampled_bins`,
  ``--frame-rate``) the bins are a regular grid at that rate over each stretch of frames between
  gaps, each showing the frame on screen at its centre, and ``frame_rate`` is that rate.
- **robs** (:func:`count_spikes`): each unit's ``spike_times`` from the Units table counted into
  the bins, ``[start, stop)``.
- **dfs** (:func:`observed`): 1 where the unit's ``obs_intervals`` cover the bin (all but 1% of
  it), 0 elsewhere; all 1 when the table has no ``obs_intervals``.
- **behavior** (:func:`resample_behavior`): each named TimeSeries (``data * conversion +
  offset``; NaN samples dropped; a 2-D series gives one column per channel) per bin: the mean of
  its samples inside the bin when there are two or more (a signal faster than the frames), else
  linear interpolation at the bin's centre.
- **blocks** (:func:`block_ids`): the trials table's intervals (else the epochs table's; each bin
  in the interval holding its centre, bins between intervals a block of their own), always also
  cut at gaps in the frame times.

The session file is written to a temporary name in the output's folder, frames streamed by
chunks of about 32 MiB (never the whole movie in memory, let alone two copies), checked with
:func:`~vivit_hpo.data.contract.validate_file` and renamed onto the output only then: a failed
import leaves nothing behind. Besides the contract's datasets it holds ``frame_times`` (T,)
(each bin's start, seconds on the NWB clock) and ``unit_ids`` (N,) (the Units table's ids).

pynwb is imported only when an import runs (``pip install 'vivit-hpo[nwb]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vivit_hpo.data.contract import validate_file
from vivit_hpo.errors import DataError

__all__ = [
    "GAP_FACTOR",
    "FrameBins",
    "NWBImport",
    "block_ids",
    "count_spikes",
    "frame_bins",
    "frame_times",
    "import_nwb",
    "observed",
    "resample_behavior",
    "resampled_bins",
]

GAP_FACTOR = 1.5
OBS_TOLERANCE = 0.01
_CHUNK_BYTES = 32 * 2**20
_INSTALL = "pip install 'vivit-hpo[nwb]'"
# ImageSeries subclasses that hold a recording, not a stimulus: never a default stimulus.
_IMAGING = ("TwoPhotonSeries", "OnePhotonSeries", "ImageMaskSeries")
_MAX_LISTED = 12
_IMAGE_KINDS = ("ImageSeries", "OpticalSeries", "IndexSeries", *_IMAGING)


# ----------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class FrameBins:
    """The time bins of a session and the stimulus frame each one shows.

    Attributes:
        start: (T,) float64 start of each bin, seconds.
        stop: (T,) float64 end of each bin (``start[i+1]`` unless a gap follows).
        frame: (T,) int64 index of the stimulus frame shown in each bin (non-decreasing).
        gap_before: (T,) bool, True where a gap in the frame times precedes the bin.
        interval: the median frame interval (or 1 / the target rate), seconds.
    """

    start: np.ndarray
    stop: np.ndarray
    frame: np.ndarray
    gap_before: np.ndarray
    interval: float

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def centre(self) -> np.ndarray:
        """(T,) float64 midpoint of each bin."""
        return (self.start + self.stop) / 2

    @property
    def frame_rate(self) -> float:
        """Bins per second: 1 / :attr:`interval`."""
        return 1.0 / self.interval


def frame_times(
    num_frames: int,
    *,
    timestamps: np.ndarray | None = None,
    starting_time: float | None = None,
    rate: float | None = None,
    what: str = "the stimulus",
) -> np.ndarray:
    """(T,) float64 time of each frame, from ``timestamps`` or ``starting_time + i / rate``.

    Raises:
        DataError: neither is given, their length differs from ``num_frames``, the rate is not
            positive, or the times do not increase.
    """
    if timestamps is not None:
        t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if t.shape[0] != num_frames:
            raise DataError(
                f"{what}: has {num_frames} frames but {t.shape[0]} timestamps; give one "
                "timestamp per frame"
            )
    elif rate is not None:
        if not (np.isfinite(rate) and rate > 0):
            raise DataError(f"{what}: rate is {rate!r}; set a positive frame rate in Hz")
        t0 = 0.0 if starting_time is None else float(starting_time)
        t = t0 + np.arange(num_frames, dtype=np.float64) / float(rate)
    else:
        raise DataError(
            f"{what}: its frames have no times (neither `timestamps` nor `starting_time` + "
            "`rate`); write the frame times into the series"
        )
    if not np.isfinite(t).all():
        raise DataError(f"{what}: timestamps hold NaN or Inf; give a finite time per frame")
    d = np.diff(t)
    if (d <= 0).any():
        i = int(np.flatnonzero(d <= 0)[0])
        raise DataError(
            f"{what}: frame times do not increase (frame {i + 1} at {t[i + 1]:.6g} s after "
            f"frame {i} at {t[i]:.6g} s); sort the frames by time and drop repeated ones"
        )
    return t


def _stretches(times: np.ndarray, gap_factor: float) -> tuple[np.ndarray, float]:
    """(T-1,) bool gap after each frame but the last, and the median frame interval."""
    if times.shape[0] < 2:
        raise DataError(
            f"the stimulus has {times.shape[0]} frame(s); a session needs at least two frames "
            "(the second one ends the first bin)"
        )
    d = np.diff(times)
    interval = float(np.median(d))
    return d > gap_factor * interval, interval


def frame_bins(times: np.ndarray, *, gap_factor: float = GAP_FACTOR) -> FrameBins:
    """One bin per frame: bin i runs from frame i's time to frame i+1's.

    The last bin, and the last bin before a gap (an interval longer than ``gap_factor`` times
    the median interval), ends one median interval after its frame.

    Args:
        times: (T,) increasing frame times, seconds (see :func:`frame_times`).
        gap_factor: how many median intervals make a gap.

    Returns:
        T bins, ``frame[i] = i``.
    """
    t = np.asarray(times, dtype=np.float64)
    gap, interval = _stretches(t, gap_factor)
    stop = np.empty_like(t)
    stop[:-1] = np.where(gap, t[:-1] + interval, t[1:])
    stop[-1] = t[-1] + interval
    return FrameBins(
        start=t.copy(),
        stop=stop,
        frame=np.arange(t.shape[0], dtype=np.int64),
        gap_before=np.r_[False, gap],
        interval=interval,
    )


def resampled_bins(times: np.ndarray, rate: float, *, gap_factor: float = GAP_FACTOR) -> FrameBins:
    """Bins on a regular grid at ``rate`` Hz, each showing the frame on screen at its centre.

    The frame times are cut into stretches at gaps (as in :func:`frame_bins`); each stretch,
    from its first frame's time to one median interval after its last frame, is covered by as
    many whole bins of ``1 / rate`` s as fit, starting at its first frame. A stretch shorter
    than one bin gives none.

    Args:
        times: (T,) increasing frame times, seconds.
        rate: the target bins per second.
        gap_factor: how many median frame intervals make a gap.

    Returns:
        The bins; ``gap_before`` marks the first bin of every stretch but the first.

    Raises:
        DataError: ``rate`` is not positive, or no stretch holds one bin.
    """
    if not (np.isfinite(rate) and rate > 0):
        raise DataError(f"--frame-rate {rate!r}: give a positive number of bins per second")
    t = np.asarray(times, dtype=np.float64)
    gap, interval = _stretches(t, gap_factor)
    ends = np.r_[np.flatnonzero(gap), t.shape[0] - 1]  # last frame of each stretch
    firsts = np.r_[0, ends[:-1] + 1]
    step = 1.0 / float(rate)
    starts: list[np.ndarray] = []
    stops: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    gaps: list[np.ndarray] = []
    for a, b in zip(firsts.tolist(), ends.tolist(), strict=True):
        span = t[b] + interval - t[a]
        n = int(np.floor(span / step + 1e-9))
        if n == 0:
            continue
        s = t[a] + np.arange(n, dtype=np.float64) * step
        centre = s + step / 2
        idx = np.searchsorted(t[a : b + 1], centre, side="right") - 1 + a
        g = np.zeros(n, dtype=bool)
        g[0] = bool(starts)  # every stretch after the first begins after a gap
        starts.append(s)
        stops.append(s + step)
        frames.append(np.maximum(idx, a).astype(np.int64))
        gaps.append(g)
    if not starts:
        raise DataError(
            f"--frame-rate {rate:g}: no stretch of the stimulus lasts one bin of {step:.4g} s; "
            "use a higher rate"
        )
    return FrameBins(
        start=np.concatenate(starts),
        stop=np.concatenate(stops),
        frame=np.concatenate(frames),
        gap_before=np.concatenate(gaps),
        interval=step,
    )


def count_spikes(spike_times: np.ndarray, bins: FrameBins) -> np.ndarray:
    """(T,) int64 spikes of one unit in each bin ``[start, stop)``; spikes outside are dropped."""
    sp = np.sort(np.asarray(spike_times, dtype=np.float64).reshape(-1))
    return np.searchsorted(sp, bins.stop, side="left") - np.searchsorted(
        sp, bins.start, side="left"
    )


def observed(
    intervals: np.ndarray, bins: FrameBins, *, tolerance: float = OBS_TOLERANCE
) -> np.ndarray:
    """(T,) bool: the unit's observation intervals cover the bin (all but ``tolerance`` of it).

    Args:
        intervals: (M, 2) [start, stop] of each interval in which the unit was observed,
            seconds; they may overlap and come in any order. M = 0: never observed.
        bins: the bins.
        tolerance: the share of a bin that may lie outside the intervals.
    """
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if iv.shape[0] == 0:
        return np.zeros(len(bins), dtype=bool)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    merged: list[list[float]] = []
    for a, b in iv.tolist():
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    m = np.asarray(merged)  # (M', 2) disjoint, sorted
    # covered(x): how much of (-inf, x] the intervals cover; piecewise linear in x.
    xp = m.reshape(-1)
    lengths = m[:, 1] - m[:, 0]
    fp = np.empty_like(xp)
    fp[1::2] = np.cumsum(lengths)
    fp[0::2] = fp[1::2] - lengths
    cover = np.interp(bins.stop, xp, fp) - np.interp(bins.start, xp, fp)
    return cover >= (1.0 - tolerance) * (bins.stop - bins.start)


def resample_behavior(
    times: np.ndarray, values: np.ndarray, bins: FrameBins, *, what: str = "behaviour"
) -> np.ndarray:
    """A behaviour series resampled onto the bins, one column per channel.

    Per bin: the mean of the samples inside ``[start, stop)`` when there are two or more, else
    the linear interpolation at the bin's centre. NaN samples are dropped first (each channel
    on its own).

    Args:
        times: (S,) sample times, seconds (sorted here if they are not).
        values: (S,) or (S, K) samples.
        bins: the bins.
        what: the series' name, for errors.

    Returns:
        (T, K) float32.

    Raises:
        DataError: a channel has no finite sample, or its samples do not reach to within one
            bin of the first and last bins.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
    if v.shape[0] != t.shape[0]:
        raise DataError(
            f"behaviour {what!r}: has {v.shape[0]} samples but {t.shape[0]} timestamps; give "
            "one time per sample"
        )
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    lo_edge, hi_edge = bins.start[0], bins.stop[-1]
    out = np.empty((len(bins), v.shape[1]), dtype=np.float32)
    for k in range(v.shape[1]):
        ok = np.isfinite(v[:, k]) & np.isfinite(t)
        tk, vk = t[ok], v[ok, k]
        col = f" (column {k})" if v.shape[1] > 1 else ""
        if tk.size == 0:
            raise DataError(
                f"behaviour {what!r}{col}: has no finite sample; leave it out of --behavior"
            )
        if tk[0] > lo_edge + bins.interval or tk[-1] < hi_edge - bins.interval:
            raise DataError(
                f"behaviour {what!r}{col}: has samples from {tk[0]:.3f} s to {tk[-1]:.3f} s but "
                f"the stimulus runs from {lo_edge:.3f} s to {hi_edge:.3f} s; pass a behaviour "
                "recorded over the whole stimulus, or leave it out of --behavior"
            )
        lo = np.searchsorted(tk, bins.start, side="left")
        hi = np.searchsorted(tk, bins.stop, side="left")
        n = hi - lo
        csum = np.r_[0.0, np.cumsum(vk)]
        mean = (csum[hi] - csum[lo]) / np.maximum(n, 1)
        out[:, k] = np.where(n >= 2, mean, np.interp(bins.centre, tk, vk))
    return out


def block_ids(bins: FrameBins, intervals: np.ndarray | None = None) -> np.ndarray:
    """(T,) int32 block id of each bin: the interval holding its centre, cut at gaps.

    Args:
        bins: the bins (their ``gap_before`` always starts a new block).
        intervals: (M, 2) [start, stop) of trials or epochs, or None. A bin belongs to the
            latest-starting interval that holds its centre; a run of bins in no interval is a
            block of its own.

    Returns:
        Consecutive ids 0, 1, ... (one per run of bins).
    """
    t = len(bins)
    label = np.full(t, -1, dtype=np.int64)
    if intervals is not None and np.asarray(intervals).size:
        iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        iv = iv[np.argsort(iv[:, 0], kind="stable")]
        c = bins.centre
        idx = np.searchsorted(iv[:, 0], c, side="right") - 1
        inside = (idx >= 0) & (c < iv[np.maximum(idx, 0), 1])
        label = np.where(inside, idx, -1)
    new = np.r_[True, label[1:] != label[:-1]] | bins.gap_before
    return (np.cumsum(new) - 1).astype(np.int32)


def _count_dtype(max_count: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_count <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


# ----------------------------------------------------------------------------- frames


class _Frames:
    """Stimulus frames in the contract's layout, read by ranges of frames.

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
        """(len(idx), *frame_shape) frames ``idx`` (non-decreasing), in the output dtype."""
        a, b = int(idx[0]), int(idx[-1]) + 1
        if self.lookup is not None:
            x = np.asarray(self.data)[self.lookup[idx]]
        else:
            x = np.asarray(self.data[a:b])
            if not (b - a == idx.shape[0] and idx[-1] - idx[0] == b - a - 1):
                x = x[idx - a]
        if self.channels_last:
            x = np.moveaxis(x, -1, 1)  # (n, H, W, C) -> (n, C, H, W)
        if x.dtype == np.bool_:
            return x.astype(np.uint8) * np.uint8(255)
        return np.ascontiguousarray(x, dtype=self.dtype)


def _write_stim(f: h5py.File, frames: _Frames, bins: FrameBins) -> None:
    """Stream the frames of ``bins`` into a contiguous ``stim`` dataset, a chunk at a time."""
    t = len(bins)
    ds = f.create_dataset("stim", shape=(t, *frames.frame_shape), dtype=frames.dtype)
    rows = frames.rows_per_chunk()
    k0 = 0
    while k0 < t:
        # At most `rows` output frames, read from at most `rows` source frames.
        k1 = min(t, k0 + rows, int(np.searchsorted(bins.frame, bins.frame[k0] + rows)))
        k1 = max(k1, k0 + 1)
        ds[k0:k1] = frames.read(bins.frame[k0:k1])
        k0 = k1


# ----------------------------------------------------------------------------- the NWB side


def _pynwb() -> Any:
    try:
        import pynwb
    except ImportError as e:
        raise DataError(
            f"importing NWB files needs pynwb, which is not installed; run `{_INSTALL}`"
        ) from e
    return pynwb


@dataclass(frozen=True)
class NWBImport:
    """What :func:`import_nwb` wrote.

    Attributes:
        out: the session file.
        name: the session name.
        stimulus: the stimulus series' path in the NWB file (and its type).
        num_bins, frame_shape, stim_dtype: T, the (C, H, W) or (H, W) of a frame, the dtype.
        frame_rate: the ``frame_rate`` attribute written.
        regular: whether the frame intervals are all within 1% of the median.
        num_units: N; ``silent_units`` of them have no spike in any bin.
        valid_fraction: the share of ``dfs`` that is 1.
        behavior_names: the K behaviour columns.
        num_blocks: blocks, and where they came from (``block_source``).
    """

    out: Path
    name: str
    stimulus: str
    num_bins: int
    frame_shape: tuple[int, ...]
    stim_dtype: str
    frame_rate: float
    regular: bool
    num_units: int
    silent_units: int
    valid_fraction: float
    behavior_names: tuple[str, ...]
    num_blocks: int
    block_source: str


def _path_of(io: Any, obj: Any) -> str:
    try:
        builder = io.manager.get_builder(obj)
    except Exception:  # a container pynwb did not read from the file: use its name
        builder = None
    path = getattr(builder, "path", None)
    return str(path).removeprefix("root/") if path else str(obj.name)


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_MAX_LISTED])
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return shown + more


def _pick(found: dict[str, Any], name: str) -> list[str]:
    """Paths of ``found`` that ``name`` names: the object's name, its path or a path suffix."""
    return [p for p, o in found.items() if o.name == name or p == name or p.endswith("/" + name)]


def _find_stimulus(nwb: Any, io: Any, name: str | None, src: Path) -> tuple[str, Any]:
    pynwb = _pynwb()
    image, index = pynwb.image.ImageSeries, pynwb.image.IndexSeries
    series = {_path_of(io, o): o for o in nwb.objects.values() if isinstance(o, image | index)}
    if not series:
        raise DataError(
            f"{src}: no ImageSeries, OpticalSeries or IndexSeries in the file; store the "
            "stimulus movie as one (frames in `data`, with timestamps or starting_time + rate)"
        )
    kinds = {p: type(o).__name__ for p, o in series.items()}
    described = [f"{p} ({kinds[p]})" for p in sorted(series)]
    if name is not None:
        hits = _pick(series, name)
        if not hits:
            raise DataError(
                f"{src}: no ImageSeries called {name!r}; the file has {_listing(described)}; "
                "pass one of them to --stimulus"
            )
        if len(hits) > 1:
            raise DataError(
                f"{src}: {len(hits)} series are called {name!r} ({_listing(sorted(hits))}); "
                "pass the full path to --stimulus"
            )
        return hits[0], series[hits[0]]
    templates = {
        id(o.indexed_timeseries)
        for o in series.values()
        if isinstance(o, index) and o.indexed_timeseries is not None
    }
    default = sorted(
        p for p, o in series.items() if type(o).__name__ not in _IMAGING and id(o) not in templates
    )
    if len(default) != 1:
        listed = [f"{p} ({kinds[p]})" for p in default] if default else described
        what = f"{len(default)} image series" if default else "only imaging series"
        raise DataError(
            f"{src}: the file has {what} ({_listing(listed)}); pass the stimulus' name to "
            "--stimulus"
        )
    return default[0], series[default[0]]


def _times_of(ts: Any, num: int, what: str) -> np.ndarray:
    stamps = ts.timestamps
    if stamps is not None and not isinstance(stamps, np.ndarray):
        stamps = np.asarray(stamps[()] if hasattr(stamps, "shape") else stamps)
    return frame_times(
        num,
        timestamps=stamps,
        starting_time=ts.starting_time,
        rate=ts.rate,
        what=what,
    )


def _frames_of(series: Any, where: str, src: Path) -> _Frames:
    pynwb = _pynwb()
    what = f"{src}: {where}"
    if isinstance(series, pynwb.image.IndexSeries):
        idx = np.asarray(series.data[()], dtype=np.int64).reshape(-1)
        if series.indexed_images is not None:
            imgs = series.indexed_images
            order = imgs.order_of_images
            items = list(order.data) if order is not None else [imgs.images[k] for k in imgs.images]
            arrays = [np.asarray(im.data[()]) for im in items]
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise DataError(
                    f"{what}: the indexed images differ in shape ({sorted(shapes)}); give every "
                    "image the same size"
                )
            templates: Any = np.stack(arrays)
        elif series.indexed_timeseries is not None:
            templates = np.asarray(series.indexed_timeseries.data[()])
        else:
            raise DataError(f"{what}: the IndexSeries indexes no images; link its Images")
        if idx.size and (idx.min() < 0 or idx.max() >= templates.shape[0]):
            raise DataError(
                f"{what}: indices run from {idx.min()} to {idx.max()} but there are "
                f"{templates.shape[0]} images; index the images from 0"
            )
        return _Frames(templates, lookup=idx, what=what)
    external = list(series.external_file[()]) if series.external_file is not None else []
    if external and (series.data is None or int(np.prod(series.data.shape)) == 0):
        names = [e.decode() if isinstance(e, bytes) else str(e) for e in external]
        missing = [n for n in names if not (src.parent / n).is_file()]
        if missing:
            raise DataError(
                f"{what}: the frames are in external files that are missing: "
                f"{_listing(missing)} (looked next to {src.name}); put them there, or write "
                "the frames into the series' data"
            )
        raise DataError(
            f"{what}: the frames are in external files ({_listing(names)}), which import-nwb "
            "cannot decode; write the frames into the series' data (e.g. decode them with "
            "imageio and rewrite the ImageSeries)"
        )
    return _Frames(series.data, what=what)


def _find_timeseries(nwb: Any, io: Any, name: str, src: Path) -> tuple[str, Any]:
    pynwb = _pynwb()
    skip = (pynwb.image.ImageSeries, pynwb.image.IndexSeries)
    series = {
        _path_of(io, o): o
        for o in nwb.objects.values()
        if isinstance(o, pynwb.TimeSeries) and not isinstance(o, skip)
    }
    hits = _pick(series, name)
    if not hits:
        have = _listing(sorted(series)) if series else "none"
        raise DataError(
            f"{src}: no TimeSeries called {name!r} for --behavior; the file's TimeSeries: {have}"
        )
    if len(hits) > 1:
        raise DataError(
            f"{src}: {len(hits)} TimeSeries are called {name!r} ({_listing(sorted(hits))}); "
            "pass the full path to --behavior"
        )
    return hits[0], series[hits[0]]


def _behavior(
    nwb: Any, io: Any, names: Sequence[str], bins: FrameBins, src: Path
) -> tuple[np.ndarray | None, list[str]]:
    cols: list[np.ndarray] = []
    labels: list[str] = []
    for name in names:
        where, ts = _find_timeseries(nwb, io, name, src)
        data = np.asarray(ts.data[()], dtype=np.float64)
        if data.ndim > 2:
            raise DataError(
                f"{src}: {where}: behaviour data of shape {data.shape}; give (samples,) or "
                "(samples, channels)"
            )
        data = data * float(ts.conversion) + float(getattr(ts, "offset", 0.0) or 0.0)
        times = _times_of(ts, data.shape[0], f"{src}: {where}")
        col = resample_behavior(times, data, bins, what=name)
        cols.append(col)
        base = where.rsplit("/", 1)[-1]
        labels.extend([base] if col.shape[1] == 1 else [f"{base}_{j}" for j in range(col.shape[1])])
    if not cols:
        return None, []
    return np.concatenate(cols, axis=1), labels


def _ragged(table: Any, column: str) -> list[np.ndarray]:
    """The rows of a ragged column of an hdmf table, each as an array."""
    vi = table[column]
    ends = np.asarray(vi.data[()], dtype=np.int64)
    flat = vi.target.data
    begins = np.r_[0, ends[:-1]]
    return [np.asarray(flat[a:b]) for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]


def _units(nwb: Any, bins: FrameBins, src: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """robs (T, N), dfs (T, N) uint8 and the unit ids (N,)."""
    units = nwb.units
    if units is None or len(units) == 0:
        raise DataError(
            f"{src}: no Units table (or an empty one); import-nwb needs spike-sorted units "
            "(nwbfile.units with spike_times)"
        )
    if "spike_times" not in units.colnames:
        raise DataError(
            f"{src}: units: the Units table has no spike_times column (it has "
            f"{', '.join(units.colnames) or 'none'}); add each unit's spike times"
        )
    spikes = _ragged(units, "spike_times")
    obs = _ragged(units, "obs_intervals") if "obs_intervals" in units.colnames else None
    t, n = len(bins), len(spikes)
    # Counts go straight into the narrowest dtype that holds them (uint8 unless a bin is long).
    robs = np.zeros((t, n), dtype=np.uint8)
    total = 0
    for j, sp in enumerate(spikes):
        c = count_spikes(sp, bins)
        top = int(c.max()) if c.size else 0
        if top > np.iinfo(robs.dtype).max:
            robs = robs.astype(_count_dtype(top))
        robs[:, j] = c
        total += int(c.sum())
    if total == 0:
        every = np.concatenate(spikes) if n else np.zeros(0)
        span = (
            f"their spikes run from {every.min():.3f} s to {every.max():.3f} s"
            if every.size
            else "they have no spikes at all"
        )
        raise DataError(
            f"{src}: units: no spike of the {n} units falls in the stimulus' bins "
            f"({bins.start[0]:.3f} s to {bins.stop[-1]:.3f} s); {span}: check that the units "
            "and the stimulus share one clock, or pick the stimulus shown while they were "
            "recorded"
        )
    dfs = np.ones((t, n), dtype=np.uint8)
    if obs is not None:
        for j, iv in enumerate(obs):
            dfs[:, j] = observed(iv, bins)
    return robs, dfs, np.asarray(units.id[()])


def _intervals(table: Any) -> np.ndarray | None:
    if table is None or len(table) == 0:
        return None
    a = np.asarray(table["start_time"].data[()], dtype=np.float64)
    b = np.asarray(table["stop_time"].data[()], dtype=np.float64)
    return np.stack([a, b], 1)


def _explain_unreadable(src: Path, err: Exception) -> DataError:
    """A one-line error for a file pynwb cannot read; names a series without times if any."""
    untimed: list[tuple[str, str]] = []
    try:
        with h5py.File(src, "r") as f:

            def visit(name: str, obj: Any) -> None:
                kind = obj.attrs.get("neurodata_type") if isinstance(obj, h5py.Group) else None
                if isinstance(kind, bytes):
                    kind = kind.decode()
                if (
                    isinstance(kind, str)
                    and kind.endswith("Series")
                    and "data" in obj
                    and "timestamps" not in obj
                    and "starting_time" not in obj
                ):
                    untimed.append((name, kind))

            f.visititems(visit)
    except OSError:
        pass
    if untimed:
        path, kind = untimed[0]
        what = "frames" if kind in _IMAGE_KINDS else "samples"
        return DataError(
            f"{src}: {path}: its {what} have no times (neither `timestamps` nor "
            f"`starting_time` + `rate`); write the {what[:-1]} times into the series"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DataError(
        f"{src}: pynwb cannot read this file ({first[:300]}); check it with nwbinspector"
    )


def import_nwb(
    nwb_file: str | Path,
    out: str | Path,
    *,
    stimulus: str | None = None,
    behavior: Sequence[str] = (),
    name: str | None = None,
    frame_rate: float | None = None,
    gap_factor: float = GAP_FACTOR,
) -> NWBImport:
    """Convert an NWB file into a session file (see the module docstring for the mapping).

    Args:
        nwb_file: the NWB (HDF5) file.
        out: the session file to write (``*.h5``); its folder is created.
        stimulus: the stimulus series' name or path; None: the file's only one.
        behavior: names (or paths) of TimeSeries to resample onto the bins, one or more columns
            each.
        name: the session name (default: ``out``'s stem).
        frame_rate: resample to bins of this rate (:func:`resampled_bins`); None: one bin per
            frame.
        gap_factor: intervals longer than this many median frame intervals are gaps.

    Returns:
        What was written.

    Raises:
        DataError: pynwb is missing, the file cannot be read, or it lacks what a session needs
            (one line that says what to do).
    """
    src = Path(nwb_file)
    out = Path(out)
    pynwb = _pynwb()
    if not src.is_file():
        raise DataError(f"{src}: no such file; pass the path of an NWB file")
    if not h5py.is_hdf5(src):
        raise DataError(f"{src}: not an HDF5 file; import-nwb reads NWB files stored in HDF5")
    session = name if name is not None else out.stem
    if not session.strip():
        raise DataError("--name is empty; give the session a name")
    with pynwb.NWBHDF5IO(str(src), "r") as io:
        try:
            nwb = io.read()
        except Exception as e:  # hdmf raises many types for a file it cannot build
            raise _explain_unreadable(src, e) from e
        where, series = _find_stimulus(nwb, io, stimulus, src)
        frames = _frames_of(series, where, src)
        times = _times_of(series, frames.num_frames, f"{src}: {where}")
        bins = (
            frame_bins(times, gap_factor=gap_factor)
            if frame_rate is None
            else resampled_bins(times, frame_rate, gap_factor=gap_factor)
        )
        robs, dfs, unit_ids = _units(nwb, bins, src)
        beh, beh_names = _behavior(nwb, io, behavior, bins, src)
        source = "none"
        intervals = None
        for label, table in (("trials", nwb.trials), ("epochs", nwb.epochs)):
            intervals = _intervals(table)
            if intervals is not None:
                source = label
                break
        blocks = block_ids(bins, intervals)
        if bins.gap_before.any():
            source = "gaps" if source == "none" else f"{source} + gaps"
        d = np.diff(times)
        regular = bool(np.all(np.abs(d - np.median(d)) <= 0.01 * np.median(d)))
        # Frames timed by a rate are exactly regular: keep that rate rather than 1 / a median.
        by_rate = frame_rate is None and series.timestamps is None and series.rate is not None
        rate = float(series.rate) if by_rate else bins.frame_rate

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as f:
                _write_stim(f, frames, bins)
                f.create_dataset("robs", data=robs)
                f.create_dataset("dfs", data=dfs)
                if beh is not None:
                    f.create_dataset("behavior", data=beh)
                    f.attrs["behavior_names"] = beh_names
                f.create_dataset("blocks", data=blocks)
                f.create_dataset("frame_times", data=bins.start)
                f.create_dataset("unit_ids", data=unit_ids)
                f.attrs["frame_rate"] = rate
                f.attrs["name"] = session
                f.attrs["source_nwb"] = str(src)
                f.attrs["nwb_identifier"] = str(nwb.identifier)
                f.attrs["nwb_stimulus"] = where
            problems = [p.replace(str(tmp), str(out)) for p in validate_file(tmp)]
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DataError(problems[0] + more)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)

    return NWBImport(
        out=out,
        name=session,
        stimulus=f"{where} ({type(series).__name__})",
        num_bins=len(bins),
        frame_shape=frames.frame_shape,
        stim_dtype=str(frames.dtype),
        frame_rate=rate,
        regular=regular,
        num_units=int(robs.shape[1]),
        silent_units=int(np.count_nonzero(robs.sum(0) == 0)),
        valid_fraction=float(dfs.mean()) if dfs.size else 1.0,
        behavior_names=tuple(beh_names),
        num_blocks=int(blocks[-1]) + 1 if blocks.size else 0,
        block_source=source,
    )
