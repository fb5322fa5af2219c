"""Bins from presentation tables: one bin per shown frame of an untimed movie template.

Allen Brain Observatory and OpenScope files keep a movie as a *template* (its frames, with no
times: an ImageSeries in ``stimulus/templates``, or a separate ``.npy``) and each frame shown as
one row of an intervals table such as ``natural_movie_one_presentations`` (``start_time``,
``stop_time``, ``frame``, ``stimulus_block``, ...), 20 to 60 repeats of the movie, some of them
shuffled. :func:`presentation_bins` turns such tables into the session's bins; it is pure (the
tables are read in :mod:`vivit_hpo.data.nwb_presentations`).

- One bin per row, ``[start_time, stop_time)``, rows of all the tables in time order (a
  shuffled movie keeps the order it was shown in). A row that ends a hair after the next one
  starts (less than 1% of the median interval: rounding) ends where the next begins; a larger
  overlap is refused.
- Its frame is ``template[int(frame)]``; ``frame`` must be a whole number inside the template.
  A ``frame`` of -1 or NaN (Allen's blank screen between presentations) shows a grey frame:
  the bin is kept (the screen was grey then, and neurons respond to that) with
  ``frame_index`` -1.
- ``frame_rate`` is 1 / the median interval between consecutive rows' starts.
- Blocks: a new block at every change of table or of ``stimulus_block`` and after every gap
  (an interval between two rows' starts longer than ``GAP_FACTOR`` = 1.5 median intervals, the
  rule of :func:`~vivit_hpo.data.binning.frame_bins`).
- Repeats (so that a split can hold out whole repeats): a new repeat at every change of table
  or of ``stimulus_block``, and where a frame shows again that the current repeat has already
  shown (frame 0 after 899 in a movie played in order; the first frame of the next permutation
  in a shuffled one), unless the same frame is merely held over consecutive rows. Grey rows
  belong to the repeat they follow. Repeats are numbered 0, 1, ... in time order over the whole
  session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vivit_hpo.data.binning import GAP_FACTOR, FrameBins
from vivit_hpo.errors import DataError

__all__ = [
    "GREY",
    "OVERLAP_TOLERANCE",
    "PresentationBins",
    "PresentationTable",
    "presentation_bins",
    "template_times_reason",
]

GREY = -1  # frame_index of a bin that shows the blank (grey) screen
OVERLAP_TOLERANCE = 0.01  # of the median interval: a row may end this much after the next starts


@dataclass(frozen=True)
class PresentationTable:
    """One presentation table as read from the file.

    Attributes:
        name: the table's name (for errors and the session file).
        start, stop: (R,) float64 ``start_time`` and ``stop_time`` of each row, seconds.
        frame: (R,) float64 template frame of each row (-1 or NaN: a grey screen).
        block: (R,) ``stimulus_block`` of each row, or None (the table is one block).
        num_frames: the number of frames in the template the table shows.
    """

    name: str
    start: np.ndarray
    stop: np.ndarray
    frame: np.ndarray
    block: np.ndarray | None
    num_frames: int


@dataclass(frozen=True)
class PresentationBins:
    """The bins of a session made of presentation rows.

    Attributes:
        bins: one bin per row; ``bins.frame`` is ``frame_index``.
        frame_index: (T,) int64 template frame shown in each bin (``GREY`` = -1 for a grey one).
        table: (T,) int64 index (into the tables given) of the table each bin comes from.
        row: (T,) int64 row of that table.
        blocks: (T,) int32 block id of each bin, 0, 1, ... in time order.
        repeat: (T,) int32 repeat id of each bin, 0, 1, ... in time order.
    """

    bins: FrameBins
    frame_index: np.ndarray
    table: np.ndarray
    row: np.ndarray
    blocks: np.ndarray
    repeat: np.ndarray

    def __len__(self) -> int:
        return len(self.bins)


def _frames_of(table: PresentationTable) -> np.ndarray:
    """(R,) int64 template frame of each row, GREY for blank rows; refuses any other value."""
    f = np.asarray(table.frame, dtype=np.float64).reshape(-1)
    grey = np.isnan(f) | (f == GREY)
    bad = ~grey & ((f != np.round(f)) | ~np.isfinite(f))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"presentations {table.name}: row {i} shows frame {float(f[i])!r}; a frame must be a "
            "whole number (or -1 / NaN for a grey screen)"
        )
    out = np.where(grey, GREY, np.nan_to_num(f, nan=GREY)).astype(np.int64)
    outside = ~grey & ((out < 0) | (out >= table.num_frames))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"presentations {table.name}: row {i} shows frame {out[i]} but the template has "
            f"{table.num_frames} frames (0..{table.num_frames - 1}); pass the template this "
            "table shows with --template"
        )
    return out


def _check_times(table: PresentationTable) -> None:
    a = np.asarray(table.start, dtype=np.float64)
    b = np.asarray(table.stop, dtype=np.float64)
    n = a.shape[0]
    for what, col in (("stop_time", b), ("frame", table.frame)):
        if np.asarray(col).shape[0] != n:
            raise DataError(
                f"presentations {table.name}: {n} start times but {np.asarray(col).shape[0]} "
                f"values of {what}; give one per row"
            )
    if table.block is not None and np.asarray(table.block).shape[0] != n:
        raise DataError(
            f"presentations {table.name}: {n} rows but {np.asarray(table.block).shape[0]} values "
            "of stimulus_block; give one per row"
        )
    bad = ~(np.isfinite(a) & np.isfinite(b) & (b > a))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"presentations {table.name}: row {i} runs from {float(a[i])!r} s to "
            f"{float(b[i])!r} s; every row needs a finite stop_time after its start_time"
        )


def _repeats(frame: np.ndarray, key_change: np.ndarray) -> np.ndarray:
    """(T,) int32 repeat ids (see the module docstring); rows already in time order."""
    out = np.empty(frame.shape[0], dtype=np.int32)
    rep, prev = -1, None
    seen: set[int] = set()
    for i, (f, new_key) in enumerate(zip(frame.tolist(), key_change.tolist(), strict=True)):
        if new_key or (f != GREY and f in seen and f != prev):
            rep, seen = rep + 1, set()
        if f != GREY:
            seen.add(f)
        prev = f
        out[i] = rep
    return out


def presentation_bins(
    tables: Sequence[PresentationTable], *, gap_factor: float = GAP_FACTOR
) -> PresentationBins:
    """The bins, frames, blocks and repeats of one session made of presentation tables.

    Args:
        tables: one or more tables; their rows are merged in time order.
        gap_factor: how many median intervals between two rows' starts make a gap.

    Returns:
        One bin per row (see the module docstring for the rules).

    Raises:
        DataError: a row without a valid time span or frame, rows of different tables that
            overlap in time, or fewer than two rows in all.
    """
    if not tables:
        raise DataError("no presentation table given; pass --presentations TABLE")
    frames: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    stops: list[np.ndarray] = []
    which: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    for k, tab in enumerate(tables):
        _check_times(tab)
        n = np.asarray(tab.start).shape[0]
        frames.append(_frames_of(tab))
        starts.append(np.asarray(tab.start, dtype=np.float64))
        stops.append(np.asarray(tab.stop, dtype=np.float64))
        which.append(np.full(n, k, dtype=np.int64))
        rows.append(np.arange(n, dtype=np.int64))
        block = np.zeros(n) if tab.block is None else np.asarray(tab.block, dtype=np.float64)
        keys.append(np.nan_to_num(block, nan=-1.0))
    start = np.concatenate(starts)
    if start.shape[0] < 2:
        raise DataError(
            f"presentations {', '.join(t.name for t in tables)}: {start.shape[0]} row(s) in all; a "
            "session needs at least two bins"
        )
    order = np.lexsort((np.concatenate(rows), np.concatenate(which), start))
    start, stop = start[order], np.concatenate(stops)[order]
    frame, table = np.concatenate(frames)[order], np.concatenate(which)[order]
    row = np.concatenate(rows)[order]
    key = np.concatenate(keys)[order]

    interval = float(np.median(np.diff(start)))
    if not interval > 0:
        interval = float(np.median(stop - start))
    over = stop[:-1] - start[1:]
    bad = over > OVERLAP_TOLERANCE * interval
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        a, b = tables[int(table[i])].name, tables[int(table[i + 1])].name
        raise DataError(
            f"presentations overlap: row {row[i]} of {a} ({start[i]:.6g} to {stop[i]:.6g} s) and "
            f"row {row[i + 1]} of {b} (from {start[i + 1]:.6g} s); import tables shown at "
            "different times, one bin per moment"
        )
    stop = stop.copy()
    stop[:-1] = np.minimum(stop[:-1], start[1:])  # rounding overlaps end where the next begins

    gap_before = np.r_[False, np.diff(start) > gap_factor * interval]
    key_change = np.r_[True, (table[1:] != table[:-1]) | (key[1:] != key[:-1])]
    new_block = gap_before | key_change
    blocks = (np.cumsum(new_block) - 1).astype(np.int32)
    new_block[0] = False  # FrameBins.gap_before: a break *before* the bin
    bins = FrameBins(start=start, stop=stop, frame=frame, gap_before=new_block, interval=interval)
    return PresentationBins(
        bins=bins,
        frame_index=frame,
        table=table,
        row=row,
        blocks=blocks,
        repeat=_repeats(frame, key_change),
    )


def template_times_reason(timestamps: np.ndarray | None) -> str | None:
    """Why a series' timestamps mark it as an untimed template, or None if they are times.

    A template's frames are shown by presentation rows or an IndexSeries; writers give it
    timestamps that are all NaN (AllenSDK's stimulus templates) or its own frame indices
    ``0, 1, ..., N-1``.
    """
    if timestamps is None:
        return None
    t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if t.size and np.isnan(t).all():
        return "its timestamps are NaN"
    if t.size > 1 and np.array_equal(t, np.arange(t.size, dtype=np.float64)):
        return f"its timestamps are 0, 1, ..., {t.size - 1} (frame indices, not times)"
    return None
