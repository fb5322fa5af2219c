"""Time bins of a session and what falls in them: pure functions, no file access.

The NWB importer (:mod:`vivit_hpo.data.nwb`) builds its bins here from frame times
(:func:`frame_bins`, :func:`resampled_bins`) or from presentation tables
(:mod:`vivit_hpo.data.presentations`), counts spikes into them (:func:`count_spikes`), marks
which bins a unit was observed in (:func:`observed`, :func:`overlapping`), resamples behaviour
onto them (:func:`resample_behavior` for point samples, :func:`resample_intervals` for samples
that each cover an interval) and cuts them into blocks (:func:`block_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivit_hpo.errors import DataError

__all__ = [
    "GAP_FACTOR",
    "OBS_TOLERANCE",
    "FrameBins",
    "block_ids",
    "count_dtype",
    "count_spikes",
    "flagged_intervals",
    "frame_bins",
    "frame_times",
    "observed",
    "overlapping",
    "resample_behavior",
    "resample_intervals",
    "resampled_bins",
]

GAP_FACTOR = 1.5
OBS_TOLERANCE = 0.01


@dataclass(frozen=True)
class FrameBins:
    """The time bins of a session and the stimulus frame each one shows.

    Attributes:
        start: (T,) float64 start of each bin, seconds.
        stop: (T,) float64 end of each bin (``start[i+1]`` unless a gap follows).
        frame: (T,) int64 index of the frame shown in each bin: of the timeline's frames
            (non-decreasing), or, for presentation bins, of the template (-1: grey).
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


def count_dtype(max_count: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_count <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def overlapping(intervals: np.ndarray, bins: FrameBins) -> np.ndarray:
    """(T,) bool: the bins that overlap any of the intervals (by any amount of time).

    Args:
        intervals: (M, 2) [start, stop] of each interval, seconds, in any order.
        bins: the bins, ``[start, stop)`` each.
    """
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(bins), dtype=bool)
    for a, b in iv.tolist():
        out |= (bins.start < b) & (bins.stop > a)
    return out


def flagged_intervals(times: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """(M, 2) [start, stop) of each run of True samples, each sample held until the next.

    A sample of a boolean series (a blink detector's ``likely_blink``) stands for the time from
    it to the next sample; the last one for one median sample interval.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    on = np.asarray(flags).reshape(-1).astype(bool)
    if t.size == 0 or not on.any():
        return np.zeros((0, 2))
    order = np.argsort(t, kind="stable")
    t, on = t[order], on[order]
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    ends = np.r_[t[1:], t[-1] + step]
    edge = np.diff(np.r_[0, on.astype(np.int8), 0])
    first, last = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1) - 1
    return np.stack([t[first], ends[last]], 1)


def resample_intervals(
    starts: np.ndarray,
    stops: np.ndarray,
    values: np.ndarray,
    bins: FrameBins,
    *,
    what: str = "behaviour",
) -> np.ndarray:
    """A behaviour whose every sample covers an interval, resampled onto the bins.

    AllenSDK writes running speed this way: ``running_speed`` at each interval's start and
    ``running_speed_end_times`` at its end. Per bin: the mean of the samples weighted by how
    much of the bin each one covers; a bin no sample covers takes the linear interpolation, at
    its centre, of the samples at their intervals' midpoints. NaN samples are dropped first.

    Args:
        starts, stops: (S,) the interval of each sample, seconds (disjoint; any order).
        values: (S,) or (S, K) samples.
        bins: the bins.
        what: the series' name, for errors.

    Returns:
        (T, K) float32.

    Raises:
        DataError: as :func:`resample_behavior`.
    """
    a = np.asarray(starts, dtype=np.float64).reshape(-1)
    b = np.asarray(stops, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
    if not (a.shape[0] == b.shape[0] == v.shape[0]):
        raise DataError(
            f"behaviour {what!r}: {v.shape[0]} samples but {a.shape[0]} start and {b.shape[0]} "
            "end times; give one interval per sample"
        )
    order = np.argsort(a, kind="stable")
    a, b, v = a[order], b[order], v[order]
    out = np.empty((len(bins), v.shape[1]), dtype=np.float32)
    for k in range(v.shape[1]):
        ok = np.isfinite(v[:, k]) & np.isfinite(a) & np.isfinite(b) & (b > a)
        ak, bk, vk = a[ok], b[ok], v[ok, k]
        col = f" (column {k})" if v.shape[1] > 1 else ""
        if ak.size == 0:
            raise DataError(
                f"behaviour {what!r}{col}: has no finite sample; leave it out of --behavior"
            )
        if ak[0] > bins.start[0] + bins.interval or bk[-1] < bins.stop[-1] - bins.interval:
            raise DataError(
                f"behaviour {what!r}{col}: has samples from {ak[0]:.3f} s to {bk[-1]:.3f} s but "
                f"the stimulus runs from {bins.start[0]:.3f} s to {bins.stop[-1]:.3f} s; pass a "
                "behaviour recorded over the whole stimulus, or leave it out of --behavior"
            )
        bk = np.minimum(bk, np.r_[ak[1:], np.inf])  # disjoint: a sample ends where the next begins
        # covered(x), integral(x): piecewise linear in x over the samples' edges.
        xp = np.stack([ak, bk], 1).reshape(-1)
        span = bk - ak
        cover = np.empty_like(xp)
        cover[1::2] = np.cumsum(span)
        cover[0::2] = cover[1::2] - span
        area = np.empty_like(xp)
        area[1::2] = np.cumsum(span * vk)
        area[0::2] = area[1::2] - span * vk
        covered = np.interp(bins.stop, xp, cover) - np.interp(bins.start, xp, cover)
        integral = np.interp(bins.stop, xp, area) - np.interp(bins.start, xp, area)
        mid = np.interp(bins.centre, (ak + bk) / 2, vk)
        out[:, k] = np.where(covered > 0, integral / np.where(covered > 0, covered, 1.0), mid)
    return out
