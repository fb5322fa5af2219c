"""Behaviour from an NWB file, resampled onto the bins, where labs keep it.

Each ``--behavior NAME`` is one of:

- a TimeSeries (``data * conversion + offset``, its ``timestamps`` or ``starting_time`` +
  ``rate``; a 2-D one gives one column per channel, ``NAME_0``, ``NAME_1``...), resampled by
  :func:`~vivit_hpo.data.binning.resample_behavior` (the mean of the samples in a bin when
  there are two or more, else the linear interpolation at its centre). When the same container
  holds ``NAME_end_times`` with as many samples (AllenSDK's ``running_speed`` is stamped at the
  start of each interval it averages, ``running_speed_end_times`` at its end), each sample
  covers its interval and the bins take the overlap-weighted mean
  (:func:`~vivit_hpo.data.binning.resample_intervals`).
- ``SERIES.FIELD``: another dataset of a TimeSeries, one value per sample, on the series'
  times: an EllipseSeries' ``area``, ``width``, ``height`` or ``angle``
  (``pupil_tracking.area``; the series' ``data`` is the ellipse centre, two columns).
- ``TABLE.COLUMN``: a column of a table with a ``timestamps`` column (AllenSDK's
  ``pupil_ellipse_fits.width``).

``--blinks NAME`` names a yes/no series (``likely_blink``; a TimeSeries or ``TABLE.COLUMN``):
every sample that is true stands for the time until the next sample. Behaviours kept in the
same container as it (the pupil fit beside ``likely_blink``) drop their samples inside blinks
before resampling (so a blink reads as the pupil on either side of it, not as a collapse), and
the caller marks the bins that overlap a blink invalid in ``dfs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivit_hpo.data.binning import (
    FrameBins,
    flagged_intervals,
    frame_times,
    resample_behavior,
    resample_intervals,
)
from vivit_hpo.data.nwb_common import listing, path_of, pick, pynwb
from vivit_hpo.errors import DataError

__all__ = ["Behavior", "read_behavior", "times_of"]

_TIME_COLUMNS = ("timestamps", "timestamp", "time")


def times_of(ts: Any, num: int, what: str) -> np.ndarray:
    """(num,) float64 sample times of a TimeSeries (``timestamps`` or starting_time + rate)."""
    stamps = ts.timestamps
    if stamps is not None and not isinstance(stamps, np.ndarray):
        stamps = np.asarray(stamps[()] if hasattr(stamps, "shape") else stamps)
    return frame_times(
        num, timestamps=stamps, starting_time=ts.starting_time, rate=ts.rate, what=what
    )


@dataclass(frozen=True)
class _Signal:
    """One behaviour as read: samples (S, K) at times (S,), or over intervals."""

    label: str
    where: str
    values: np.ndarray
    times: np.ndarray
    ends: np.ndarray | None
    parent: Any


@dataclass(frozen=True)
class Behavior:
    """The behaviour columns and the blink intervals.

    Attributes:
        values: (T, K) float32, or None when no behaviour was asked for.
        names: the K column names.
        blinks: (M, 2) [start, stop) of the blinks (M = 0 without ``--blinks``).
    """

    values: np.ndarray | None
    names: list[str]
    blinks: np.ndarray


def _objects(nwb: Any, io: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TimeSeries that are not images, tables) of the file, by path."""
    nw = pynwb()
    from hdmf.common import DynamicTable

    skip = (nw.image.ImageSeries, nw.image.IndexSeries)
    series, tables = {}, {}
    for o in nwb.objects.values():
        if isinstance(o, nw.TimeSeries) and not isinstance(o, skip):
            series[path_of(io, o)] = o
        elif isinstance(o, DynamicTable) and any(c in o.colnames for c in _TIME_COLUMNS):
            tables[path_of(io, o)] = o
    return series, tables


def _one(found: dict[str, Any], name: str, what: str, option: str, src: Path) -> str | None:
    hits = pick(found, name)
    if len(hits) > 1:
        raise DataError(
            f"{src}: {len(hits)} {what} are called {name!r} ({listing(sorted(hits))}); pass the "
            f"full path to {option}"
        )
    return hits[0] if hits else None


def _series_signal(ts: Any, where: str, field: str | None, src: Path) -> _Signal:
    data = np.asarray(ts.data[()], dtype=np.float64)
    n = data.shape[0] if data.ndim else 1
    label = where.rsplit("/", 1)[-1]
    if field is not None and field != "data":
        raw = getattr(ts, field, None)
        values = None if raw is None or not hasattr(raw, "shape") else np.asarray(raw[()])
        if values is None or values.ndim == 0 or values.shape[0] != n:
            have = sorted(
                k
                for k, v in ts.fields.items()
                if hasattr(v, "shape") and len(v.shape) >= 1 and v.shape[0] == n and k != "data"
            )
            raise DataError(
                f"{src}: {where} has no dataset {field!r} with one value per sample (it has: "
                f"{', '.join(['data', *have])})"
            )
        data = values.astype(np.float64)
        label = f"{label}.{field}"
    else:
        data = data * float(ts.conversion) + float(getattr(ts, "offset", 0.0) or 0.0)
    if data.ndim > 2:
        raise DataError(
            f"{src}: {where}: behaviour data of shape {data.shape}; give (samples,) or "
            "(samples, channels)"
        )
    times = times_of(ts, data.shape[0], f"{src}: {where}")
    ends = None
    parent = ts.parent
    if field is None:
        sibling = next(
            (c for c in getattr(parent, "children", ()) if c.name == f"{ts.name}_end_times"), None
        )
        if sibling is not None and sibling.timestamps is not None:
            e = np.asarray(sibling.timestamps[()], dtype=np.float64).reshape(-1)
            ends = e if e.shape[0] == times.shape[0] else None
    return _Signal(label, where, data, times, ends, parent)


def _table_signal(table: Any, where: str, column: str, src: Path) -> _Signal:
    time_col = next(c for c in _TIME_COLUMNS if c in table.colnames)
    if column not in table.colnames or column == time_col:
        have = [c for c in table.colnames if c != time_col]
        raise DataError(
            f"{src}: {where} has no column {column!r} (it has: {', '.join(have) or 'none'})"
        )
    values = np.asarray(table[column].data[()], dtype=np.float64)
    times = np.asarray(table[time_col].data[()], dtype=np.float64).reshape(-1)
    label = f"{where.rsplit('/', 1)[-1]}.{column}"
    return _Signal(label, where, values, times, None, table.parent)


def _signal(nwb: Any, io: Any, name: str, option: str, src: Path) -> _Signal:
    series, tables = _objects(nwb, io)
    where = _one(series, name, "TimeSeries", option, src)
    if where is not None:
        return _series_signal(series[where], where, None, src)
    if "." in name:
        base, field = name.rsplit(".", 1)
        where = _one(series, base, "TimeSeries", option, src)
        if where is not None:
            return _series_signal(series[where], where, field, src)
        where = _one(tables, base, "tables", option, src)
        if where is not None:
            return _table_signal(tables[where], where, field, src)
    have = listing(sorted(series)) if series else "none"
    more = (
        f"; tables with timestamps (pass TABLE.COLUMN): {listing(sorted(tables))}" if tables else ""
    )
    raise DataError(
        f"{src}: no TimeSeries called {name!r} for {option}; the file's TimeSeries: {have}{more}"
    )


def _inside(times: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """(S,) bool: the times that fall in any [start, stop) interval."""
    out = np.zeros(times.shape[0], dtype=bool)
    for a, b in intervals.tolist():
        out |= (times >= a) & (times < b)
    return out


def read_behavior(
    nwb: Any,
    io: Any,
    names: Sequence[str],
    bins: FrameBins,
    src: Path,
    *,
    blinks: str | None = None,
) -> Behavior:
    """The ``--behavior`` columns on the bins and the ``--blinks`` intervals (module docstring).

    Raises:
        DataError: a name that is no series, field or column (the candidates are listed), or a
            behaviour that does not cover the bins.
    """
    blink_iv = np.zeros((0, 2))
    blink_parent = None
    if blinks is not None:
        sig = _signal(nwb, io, blinks, "--blinks", src)
        flags = np.nan_to_num(np.asarray(sig.values, dtype=np.float64).reshape(-1), nan=0.0) != 0
        blink_iv = flagged_intervals(sig.times, flags)
        blink_parent = sig.parent
    cols: list[np.ndarray] = []
    labels: list[str] = []
    for name in names:
        sig = _signal(nwb, io, name, "--behavior", src)
        values = np.array(sig.values, dtype=np.float64)
        if blink_iv.size and blink_parent is not None and sig.parent is blink_parent:
            values[_inside(sig.times, blink_iv)] = np.nan
        if sig.ends is not None:
            col = resample_intervals(sig.times, sig.ends, values, bins, what=name)
        else:
            col = resample_behavior(sig.times, values, bins, what=name)
        cols.append(col)
        labels.extend(
            [sig.label] if col.shape[1] == 1 else [f"{sig.label}_{j}" for j in range(col.shape[1])]
        )
    values_out = np.concatenate(cols, axis=1) if cols else None
    return Behavior(values=values_out, names=labels, blinks=blink_iv)
