"""Writing real NWB files with pynwb for the import tests.

A uniquely named module (not conftest) so `from nwb_helpers import ...` cannot clash with another
test folder's helpers.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import BehavioralTimeSeries, EyeTracking, SpatialSeries

START = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.timezone.utc)


def new_nwb(identifier: str = "test") -> NWBFile:
    return NWBFile(
        session_description="a test recording",
        identifier=identifier,
        session_start_time=START,
    )


def add_units(
    nwb: NWBFile,
    spikes: Sequence[np.ndarray],
    obs_intervals: Sequence[np.ndarray] | None = None,
) -> None:
    for j, sp in enumerate(spikes):
        kw: dict[str, Any] = {"spike_times": np.asarray(sp, dtype=np.float64)}
        if obs_intervals is not None:
            kw["obs_intervals"] = np.asarray(obs_intervals[j], dtype=np.float64).reshape(-1, 2)
        nwb.add_unit(**kw)


def write_nwb(nwb: NWBFile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hdmf's dtype-conversion notes
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwb)
    return path


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) of each run of True in a (T,) bool array."""
    m = np.r_[False, np.asarray(mask, dtype=bool), False]
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def session_to_nwb(session: Path, out: Path, *, seed: int = 0) -> Path:
    """Write a session file as a lab would keep it in NWB.

    The movie is an ImageSeries in ``stimulus`` (starting_time + rate), each unit's spike times
    are drawn uniformly inside each bin (as many as its count), its ``obs_intervals`` are the
    runs of ``dfs`` = 1, the blocks are the trials table, and the behaviour goes to a processing
    module ``behavior``: run_speed and pupil as TimeSeries, eye position as one 2-column
    SpatialSeries, each sampled at the bins' centres.
    """
    from pynwb.image import ImageSeries

    with h5py.File(session, "r") as f:
        stim = f["stim"][()]
        robs = f["robs"][()]
        dfs = f["dfs"][()]
        beh = f["behavior"][()]
        blocks = f["blocks"][()]
        fr = float(f.attrs["frame_rate"])
    t, n = robs.shape
    edges = np.arange(t + 1, dtype=np.float64) / fr  # bin i = [edges[i], edges[i+1])
    rng = np.random.default_rng(seed)
    nwb = new_nwb(session.stem)
    nwb.add_stimulus(ImageSeries(name="movie", data=stim, unit="n.a.", rate=fr, starting_time=0.0))
    width = np.diff(edges)
    spikes, obs = [], []
    for j in range(n):
        bins = np.repeat(np.arange(t), robs[:, j].astype(np.int64))
        # Away from the edges, so that the bin a spike falls in is never a rounding question.
        u = rng.uniform(0.01, 0.99, bins.size)
        spikes.append(np.sort(edges[bins] + u * width[bins]))
        obs.append(np.array([[edges[a], edges[b]] for a, b in runs(dfs[:, j] > 0)]))
    add_units(nwb, spikes, obs)
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    stops = np.r_[starts[1:], t]
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        nwb.add_trial(start_time=edges[a], stop_time=edges[b])
    centres = (edges[:-1] + edges[1:]) / 2
    module = nwb.create_processing_module("behavior", "running, pupil and eye position")
    series = BehavioralTimeSeries(name="BehavioralTimeSeries")
    series.add_timeseries(
        TimeSeries(name="run_speed", data=beh[:, 0], unit="a.u.", timestamps=centres)
    )
    series.add_timeseries(TimeSeries(name="pupil", data=beh[:, 1], unit="a.u.", timestamps=centres))
    module.add(series)
    module.add(
        EyeTracking(
            name="EyeTracking",
            spatial_series=SpatialSeries(
                name="eye_position",
                data=beh[:, 2:4],
                reference_frame="screen centre",
                timestamps=centres,
            ),
        )
    )
    return write_nwb(nwb, out)
