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

from vivit_hpo.data.binning import (
    GAP_FACTOR,
    FrameBins,
    block_ids,
    count_dtype,
    count_spikes,
    frame_bins,
    frame_times,
    observed,
    resample_behavior,
    resampled_bins,
)
from vivit_hpo.data.contract import validate_file
from vivit_hpo.data.frames import Frames, write_stim
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

_INSTALL = "pip install 'vivit-hpo[nwb]'"
# ImageSeries subclasses that hold a recording, not a stimulus: never a default stimulus.
_IMAGING = ("TwoPhotonSeries", "OnePhotonSeries", "ImageMaskSeries")
_MAX_LISTED = 12
_IMAGE_KINDS = ("ImageSeries", "OpticalSeries", "IndexSeries", *_IMAGING)


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


def _frames_of(series: Any, where: str, src: Path) -> Frames:
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
        return Frames(templates, lookup=idx, what=what)
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
    return Frames(series.data, what=what)


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
            robs = robs.astype(count_dtype(top))
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
                write_stim(f, frames, bins.frame)
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
