"""Importing an NWB recording (a movie, its spike-sorted units, behaviour) as a session file.

The mapping (``vivit-hpo data import-nwb``; README "From NWB"). The stimulus is either

- a **timeline** (:mod:`vivit_hpo.data.nwb_stimulus`, ``--stimulus``): an ImageSeries,
  OpticalSeries or IndexSeries whose frames were shown at its times. Bin i runs from frame i's
  time to frame i+1's (:func:`~vivit_hpo.data.binning.frame_bins`; the last bin, and the last
  before a *gap*, an interval over ``GAP_FACTOR`` = 1.5 median intervals, ends one median
  interval after its frame). ``frame_rate`` is the series' ``rate`` when it is timed by one,
  else 1 / the median frame interval. Blocks: the trials table's intervals (else the epochs
  table's), always also cut at gaps (:func:`~vivit_hpo.data.binning.block_ids`).
- or **presentations** (:mod:`vivit_hpo.data.presentations`, ``--presentations TABLE
  --template NAME|FILE.npy``): an untimed movie template and the intervals tables whose rows
  each show one of its frames, as Allen Brain Observatory and OpenScope files keep movies. One
  bin per row, frames ``template[frame]`` (grey for -1 / NaN), blocks at each
  ``stimulus_block`` and gap, ``frame_index`` and ``repeat`` written so that splits can hold
  out whole repeats; ``frame_rate`` is 1 / the median interval.

With ``--frame-rate HZ`` the bins are a regular grid at that rate over each stretch between
gaps, each showing the frame on screen at its centre
(:func:`~vivit_hpo.data.binning.resampled_bins`). Frames: uint8, float16 and float32 kept,
float64 becomes float32, bool 0/255, other integers float32 as stored; ``(frames, H, W, C)`` is
written as ``(T, C, H, W)``.

``robs`` and ``dfs`` come from the Units table (:mod:`vivit_hpo.data.nwb_units`: unit selection,
spike counts, ``obs_intervals``, ``invalid_times``), ``behavior`` from named series
(:mod:`vivit_hpo.data.nwb_behavior`); bins that overlap a ``--blinks`` interval are invalid in
``dfs`` for every unit.

NWB 1 files (an ``nwb_version`` *dataset* at the root, ``NWB-1.x``; NWB 2 keeps it as an
attribute) are refused before pynwb opens them, with a conversion path.

The session file is written to a temporary name in the output's folder, frames streamed by
chunks of about 32 MiB (never the whole movie in memory, let alone two copies), checked with
:func:`~vivit_hpo.data.contract.validate_file` and renamed onto the output only then: a failed
import leaves nothing behind. Besides the contract's datasets it holds ``frame_times`` (T,)
(each bin's start, seconds on the NWB clock) and ``unit_ids`` (N,) (the kept units' ids), and
from presentations ``frame_index``, ``repeat`` and ``presentation_table`` (T,).

pynwb is imported only when an import runs (``pip install 'vivit-hpo[nwb]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vivit_hpo._io import atomic_path
from vivit_hpo.data.binning import (
    GAP_FACTOR,
    FrameBins,
    block_ids,
    count_spikes,
    frame_bins,
    frame_times,
    observed,
    overlapping,
    resample_behavior,
    resampled_bins,
)
from vivit_hpo.data.contract import validate_file
from vivit_hpo.data.frames import Frames, FrameStack, write_stim
from vivit_hpo.data.nwb_behavior import read_behavior, times_of
from vivit_hpo.data.nwb_common import pynwb
from vivit_hpo.data.nwb_presentations import read_presentations
from vivit_hpo.data.nwb_stimulus import find_stimulus, frames_of
from vivit_hpo.data.nwb_units import UnitSelection, read_units
from vivit_hpo.data.presentations import GREY, presentation_bins
from vivit_hpo.data.units import UnitFilter
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

_IMAGE_KINDS = (
    "ImageSeries",
    "OpticalSeries",
    "IndexSeries",
    "TwoPhotonSeries",
    "OnePhotonSeries",
    "ImageMaskSeries",
)


@dataclass(frozen=True)
class NWBImport:
    """What :func:`import_nwb` wrote.

    Attributes:
        out: the session file.
        name: the session name.
        stimulus: the stimulus series' path in the NWB file (and its type), or the
            presentation tables and their templates.
        num_bins, frame_shape, stim_dtype: T, the (C, H, W) or (H, W) of a frame, the dtype.
        frame_rate: the ``frame_rate`` attribute written.
        regular: whether the intervals between bins (inside blocks) are all within 1% of the
            median.
        num_units: N kept; ``silent_units`` of them have no spike in any bin.
        valid_fraction: the share of ``dfs`` that is 1.
        behavior_names: the K behaviour columns.
        num_blocks: blocks, and where they came from (``block_source``).
        units_in_file, unit_selection: how many units the Units table has, and how N were
            chosen.
        invalid_intervals: ``invalid_times`` intervals that made some bins invalid.
        blink_bins: bins made invalid by ``--blinks``.
        num_repeats, grey_bins: from presentations: repeats, and bins showing a grey screen.
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
    units_in_file: int = 0
    unit_selection: str = "all"
    invalid_intervals: int = 0
    blink_bins: int = 0
    num_repeats: int = 0
    grey_bins: int = 0


def _check_nwb_version(src: Path) -> None:
    """Refuse NWB 1 files (and HDF5 files that are no NWB) before pynwb opens them."""
    with h5py.File(src, "r") as f:
        if "nwb_version" in f.attrs:
            return
        ds = f.get("nwb_version")
        if isinstance(ds, h5py.Dataset):
            raw = ds[()]
            raw = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) and raw.size else raw
            version = raw.decode() if isinstance(raw, bytes) else str(raw)
            raise DataError(
                f"{src}: an NWB 1 file (nwb_version {version!r}), which pynwb cannot read; "
                "convert it to NWB 2 first (Allen Brain Observatory sessions: download their "
                "NWB 2 release from DANDI, or open the file with AllenSDK and write NWB 2 with "
                "pynwb)"
            )
    raise DataError(
        f"{src}: an HDF5 file without `nwb_version`, so not an NWB file; import-nwb reads NWB 2 "
        "files (write one with pynwb)"
    )


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


@dataclass(frozen=True)
class _Stimulus:
    """What a session's stimulus gives it: bins, frames, blocks, and what to write about it."""

    bins: FrameBins
    index: np.ndarray  # (T,) source frame of each bin, -1 for grey
    frames: Frames | FrameStack
    grey: float | None
    blocks: np.ndarray
    block_source: str
    regular: bool
    rate: float
    stimulus: str
    attrs: dict[str, Any]
    extra: dict[str, np.ndarray]


def _timeline(
    nwb: Any, io: Any, stimulus: str | None, frame_rate: float | None, gap: float, src: Path
) -> _Stimulus:
    """Bins, frames and blocks from a stimulus timeline (``--stimulus``)."""
    where, series = find_stimulus(nwb, io, stimulus, src)
    frames = frames_of(series, where, src)
    times = times_of(series, frames.num_frames, f"{src}: {where}")
    bins = (
        frame_bins(times, gap_factor=gap)
        if frame_rate is None
        else resampled_bins(times, frame_rate, gap_factor=gap)
    )
    source, intervals = "none", None
    for label, table in (("trials", nwb.trials), ("epochs", nwb.epochs)):
        intervals = _intervals(table)
        if intervals is not None:
            source = label
            break
    if bins.gap_before.any():
        source = "gaps" if source == "none" else f"{source} + gaps"
    d = np.diff(times)
    # Frames timed by a rate are exactly regular: keep that rate rather than 1 / a median.
    by_rate = frame_rate is None and series.timestamps is None and series.rate is not None
    return _Stimulus(
        bins=bins,
        index=bins.frame,
        frames=frames,
        grey=None,
        blocks=block_ids(bins, intervals),
        block_source=source,
        regular=bool(np.all(np.abs(d - np.median(d)) <= 0.01 * np.median(d))),
        rate=float(series.rate) if by_rate else bins.frame_rate,
        stimulus=f"{where} ({type(series).__name__})",
        attrs={"nwb_stimulus": where},
        extra={},
    )


def _presented(
    nwb: Any,
    io: Any,
    tables: Sequence[str],
    templates: Sequence[str],
    frame_rate: float | None,
    gap: float,
    src: Path,
) -> _Stimulus:
    """Bins, frames, blocks and repeats from presentation tables (``--presentations``)."""
    read = read_presentations(nwb, io, tables, templates, src)
    try:
        pb = presentation_bins(read.tables, gap_factor=gap)
    except DataError as e:
        raise DataError(f"{src}: {e}") from e
    rows = np.arange(len(pb))
    bins, blocks = pb.bins, pb.blocks
    if frame_rate is not None:
        bins = resampled_bins(pb.bins.start, frame_rate, gap_factor=gap)
        rows = bins.frame  # the row on screen at each new bin's centre
        b = pb.blocks[rows]
        blocks = (np.cumsum(np.r_[True, b[1:] != b[:-1]] | bins.gap_before) - 1).astype(np.int32)
    frame_index = pb.frame_index[rows]
    table = pb.table[rows]
    index = np.where(frame_index == GREY, -1, read.offsets[table] + frame_index)
    d = np.diff(bins.start)[~bins.gap_before[1:]]
    shown = sorted(set(read.templates))
    return _Stimulus(
        bins=bins,
        index=index,
        frames=read.frames,
        grey=read.grey,
        blocks=blocks,
        block_source="stimulus_block + gaps",
        regular=bool(d.size == 0 or np.all(np.abs(d - np.median(d)) <= 0.01 * np.median(d))),
        rate=bins.frame_rate,
        stimulus=f"{' + '.join(read.paths)} (presentations of {' + '.join(shown)})",
        attrs={"nwb_presentations": list(read.paths), "nwb_templates": list(read.templates)},
        extra={
            "frame_index": frame_index.astype(np.int32),
            "repeat": pb.repeat[rows],
            "presentation_table": table.astype(np.int16),
        },
    )


def import_nwb(
    nwb_file: str | Path,
    out: str | Path,
    *,
    stimulus: str | None = None,
    presentations: Sequence[str] = (),
    templates: Sequence[str] = (),
    behavior: Sequence[str] = (),
    blinks: str | None = None,
    unit_filter: str | None = None,
    allen_qc: bool = False,
    regions: Sequence[str] = (),
    name: str | None = None,
    frame_rate: float | None = None,
    gap_factor: float = GAP_FACTOR,
) -> NWBImport:
    """Convert an NWB file into a session file (see the module docstring for the mapping).

    Args:
        nwb_file: the NWB (HDF5) file.
        out: the session file to write (``*.h5``); its folder is created.
        stimulus: the stimulus timeline's name or path; None: the file's only one.
        presentations: presentation tables (names or paths) to bin instead of a timeline.
        templates: the movie template(s) they show: names of ImageSeries in the file or
            ``.npy`` files; one for all the tables or one per table; none: by name.
        behavior: names (or paths, ``SERIES.FIELD``, ``TABLE.COLUMN``) of behaviour to
            resample onto the bins, one or more columns each.
        blinks: a yes/no series of blinks: those bins are invalid, and the behaviour kept
            beside it drops its samples in them.
        unit_filter: an expression over the Units table's columns that units must meet.
        allen_qc: keep only units that pass AllenSDK's default quality metrics.
        regions: keep only units whose peak channel lies in one of these locations.
        name: the session name (default: ``out``'s stem).
        frame_rate: resample to bins of this rate (:func:`resampled_bins`); None: one bin per
            frame (or row).
        gap_factor: intervals longer than this many median frame intervals are gaps.

    Returns:
        What was written.

    Raises:
        DataError: pynwb is missing, the file cannot be read, or it lacks what a session needs
            (one line that says what to do).
    """
    src = Path(nwb_file)
    out = Path(out)
    nw = pynwb()
    if not src.is_file():
        raise DataError(f"{src}: no such file; pass the path of an NWB file")
    if not h5py.is_hdf5(src):
        raise DataError(f"{src}: not an HDF5 file; import-nwb reads NWB files stored in HDF5")
    session = name if name is not None else out.stem
    if not session.strip():
        raise DataError("--name is empty; give the session a name")
    if presentations and stimulus is not None:
        raise DataError(
            "--stimulus and --presentations both given; a session's frames come from a timeline "
            "(--stimulus) or from presentation tables (--presentations), not both"
        )
    if templates and not presentations:
        raise DataError("--template names the movie that --presentations tables show; add them")
    if unit_filter is not None:
        UnitFilter.parse(unit_filter)  # a bad expression is refused before the file is read
    selection = UnitSelection(unit_filter, allen_qc, tuple(regions))
    _check_nwb_version(src)
    with nw.NWBHDF5IO(str(src), "r") as io:
        try:
            nwb = io.read()
        except Exception as e:  # hdmf raises many types for a file it cannot build
            raise _explain_unreadable(src, e) from e
        got = (
            _presented(nwb, io, presentations, templates, frame_rate, gap_factor, src)
            if presentations
            else _timeline(nwb, io, stimulus, frame_rate, gap_factor, src)
        )
        bins = got.bins
        units = read_units(nwb, bins, src, selection)
        beh = read_behavior(nwb, io, behavior, bins, src, blinks=blinks)
        dfs = units.dfs
        blinked = overlapping(beh.blinks, bins) if beh.blinks.size else np.zeros(len(bins), bool)
        dfs[blinked] = 0
        blocks = got.blocks
        frames = got.frames

        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as f:
                write_stim(f, frames, got.index, grey=got.grey)
                f.create_dataset("robs", data=units.robs)
                f.create_dataset("dfs", data=dfs)
                if beh.values is not None:
                    f.create_dataset("behavior", data=beh.values)
                    f.attrs["behavior_names"] = beh.names
                f.create_dataset("blocks", data=blocks)
                f.create_dataset("frame_times", data=bins.start)
                f.create_dataset("unit_ids", data=units.ids)
                for key, value in got.extra.items():
                    f.create_dataset(key, data=value)
                f.attrs["frame_rate"] = got.rate
                f.attrs["name"] = session
                f.attrs["source_nwb"] = str(src)
                f.attrs["nwb_identifier"] = str(nwb.identifier)
                f.attrs["nwb_unit_selection"] = selection.describe()
                for key, value in got.attrs.items():
                    f.attrs[key] = value
            problems = [p.replace(str(tmp), str(out)) for p in validate_file(tmp)]
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DataError(problems[0] + more)

    robs = units.robs
    extra = got.extra
    return NWBImport(
        out=out,
        name=session,
        stimulus=got.stimulus,
        num_bins=len(bins),
        frame_shape=frames.frame_shape,
        stim_dtype=str(frames.dtype),
        frame_rate=got.rate,
        regular=got.regular,
        num_units=int(robs.shape[1]),
        silent_units=int(np.count_nonzero(robs.sum(0) == 0)),
        valid_fraction=float(dfs.mean()) if dfs.size else 1.0,
        behavior_names=tuple(beh.names),
        num_blocks=int(blocks[-1]) + 1 if blocks.size else 0,
        block_source=got.block_source,
        units_in_file=units.in_file,
        unit_selection=selection.describe(),
        invalid_intervals=units.invalid_intervals,
        blink_bins=int(blinked.sum()),
        num_repeats=int(extra["repeat"].max()) + 1 if "repeat" in extra else 0,
        grey_bins=int(np.count_nonzero(extra["frame_index"] == GREY)) if extra else 0,
    )
