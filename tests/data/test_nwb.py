"""NWB import: the pure binning helpers, real NWB files written with pynwb, the CLI, and a
simulated population that trains to the same BPS imported from NWB as written directly."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from nwb_helpers import add_units, new_nwb, session_to_nwb, write_nwb
from pynwb import TimeSeries
from pynwb.base import ImageReferences, Images
from pynwb.behavior import BehavioralTimeSeries, Position, SpatialSeries
from pynwb.image import GrayscaleImage, ImageSeries, IndexSeries, OpticalSeries
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import DataConfig, load_run_config
from vivit_hpo.data import import_nwb, inspect_file, load_sessions, synthesize, validate_file
from vivit_hpo.data.nwb import (
    block_ids,
    count_spikes,
    frame_bins,
    frame_times,
    observed,
    resample_behavior,
    resampled_bins,
)
from vivit_hpo.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
WIDE = {"COLUMNS": "200"}


# ----------------------------------------------------------------------------- pure helpers


def test_frame_times_from_rate_or_timestamps() -> None:
    np.testing.assert_allclose(frame_times(4, starting_time=2.0, rate=4.0), [2, 2.25, 2.5, 2.75])
    np.testing.assert_array_equal(
        frame_times(3, timestamps=np.array([0.0, 0.1, 0.3])), [0, 0.1, 0.3]
    )
    assert frame_times(3, starting_time=None, rate=10.0)[0] == 0.0
    with pytest.raises(DataError, match="frames have no times"):
        frame_times(3)
    with pytest.raises(DataError, match="has 3 frames but 2 timestamps"):
        frame_times(3, timestamps=np.array([0.0, 1.0]))
    with pytest.raises(DataError, match=r"do not increase \(frame 2 at 0.1 s after frame 1"):
        frame_times(3, timestamps=np.array([0.0, 0.2, 0.1]))
    with pytest.raises(DataError, match="rate is 0"):
        frame_times(3, rate=0.0)


def test_frame_bins_run_to_the_next_frame_and_stop_at_gaps() -> None:
    t = np.array([0.0, 0.1, 0.2, 0.31, 0.4, 2.0, 2.1, 2.2])  # a gap after 0.4 s
    bins = frame_bins(t)
    assert bins.interval == pytest.approx(0.1)
    np.testing.assert_array_equal(bins.start, t)
    # Each bin ends at the next frame; before the gap and at the end one median interval later.
    np.testing.assert_allclose(bins.stop, [0.1, 0.2, 0.31, 0.4, 0.5, 2.1, 2.2, 2.3])
    np.testing.assert_array_equal(bins.frame, np.arange(8))
    np.testing.assert_array_equal(bins.gap_before, [0, 0, 0, 0, 0, 1, 0, 0])
    assert bins.frame_rate == pytest.approx(10.0)
    # An interval of 1.4 medians is no gap; a gap factor of 1.2 makes it one.
    t2 = np.array([0.0, 0.1, 0.2, 0.34, 0.44])
    assert not frame_bins(t2).gap_before.any()
    assert frame_bins(t2, gap_factor=1.2).gap_before.tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(DataError, match="at least two frames"):
        frame_bins(np.array([1.0]))


def test_resampled_bins_show_the_frame_on_screen_at_their_centre() -> None:
    t = np.arange(6) / 30.0  # 30 Hz
    up = resampled_bins(t, 60.0)
    assert len(up) == 12 and up.frame_rate == pytest.approx(60.0)
    np.testing.assert_array_equal(up.frame, np.repeat(np.arange(6), 2))
    np.testing.assert_allclose(up.stop - up.start, 1 / 60)
    down = resampled_bins(np.arange(12) / 60.0, 30.0)
    # Frame 2k+1 comes on at the centre of bin k: it is the one on screen there.
    np.testing.assert_array_equal(down.frame, [1, 3, 5, 7, 9, 11])
    gapped = resampled_bins(np.r_[np.arange(4), 10 + np.arange(4)] / 30.0, 60.0)
    assert len(gapped) == 16 and gapped.gap_before.tolist() == [0] * 8 + [1] + [0] * 7
    np.testing.assert_array_equal(gapped.frame[8:], np.repeat(np.arange(4, 8), 2))
    assert gapped.start[8] == pytest.approx(10 / 30)
    with pytest.raises(DataError, match="no stretch of the stimulus lasts one bin"):
        resampled_bins(t, 1.0)
    with pytest.raises(DataError, match="--frame-rate -5"):
        resampled_bins(t, -5.0)


def test_count_spikes_counts_start_inclusive_stop_exclusive() -> None:
    bins = frame_bins(np.array([0.0, 1.0, 2.0, 3.0, 10.0]))
    sp = np.array([-0.5, 0.0, 0.5, 0.999, 1.0, 2.5, 3.5, 4.5, 10.2, 11.0])
    # 3.5 falls in bin 3 [3, 4); 4.5 in the gap [4, 10) is dropped, as are -0.5 and 11.0.
    np.testing.assert_array_equal(count_spikes(sp[::-1], bins), [3, 1, 1, 1, 1])


def test_observed_needs_the_whole_bin_covered() -> None:
    bins = frame_bins(np.arange(11) * 0.1)  # 11 bins [0, 0.1) ... [1.0, 1.1)
    iv = np.array([[0.3, 0.6], [0.0, 0.2], [0.55, 0.8], [0.995, 2.0]])  # overlapping, unsorted
    np.testing.assert_array_equal(observed(iv, bins).astype(int), [1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1])
    # Bin 9 [0.9, 1.0) is covered from 0.995 on: 5% of it, not enough; 1% missing is tolerated.
    assert observed(np.array([[0.901, 1.0]]), bins)[9]
    assert not observed(np.zeros((0, 2)), bins).any()
    # Overlaps count once: bin 1 [0.1, 0.2) is half covered, however many intervals cover it.
    twice = np.array([[0.0, 0.15], [0.1, 0.15], [0.12, 0.14]])
    assert observed(twice, bins).tolist() == [True] + [False] * 10


def test_resample_behaviour_means_fast_and_interpolates_slow_signals() -> None:
    t = np.arange(10) / 10.0  # bins of 0.1 s
    bins = frame_bins(t)
    fast_t = np.arange(0, 1.0, 0.001)
    fast = resample_behavior(fast_t, 3.0 * fast_t, bins)
    want = _bin_means(fast_t, 3.0 * fast_t, bins.start, bins.stop)
    np.testing.assert_allclose(fast[:, 0], want, rtol=1e-6)
    slow_t = np.arange(0, 1.21, 0.25)
    slow_v = np.stack([2.0 * slow_t + 1.0, -slow_t], 1)
    slow_v[2, 0] = np.nan  # dropped, the line stays a line
    slow = resample_behavior(slow_t, slow_v, bins)
    assert slow.shape == (10, 2) and slow.dtype == np.float32
    np.testing.assert_allclose(slow[:, 0], 2.0 * bins.centre + 1.0, rtol=1e-6)
    np.testing.assert_allclose(slow[:, 1], -bins.centre, rtol=1e-6, atol=1e-7)
    with pytest.raises(DataError, match=r"'late': has samples from 0.500 s to 1.000 s but the "):
        resample_behavior(slow_t[2:], slow_v[2:, 1], bins, what="late")
    with pytest.raises(DataError, match=r"'x' \(column 1\): has no finite sample"):
        resample_behavior(slow_t, np.stack([slow_t, np.full(5, np.nan)], 1), bins, what="x")
    with pytest.raises(DataError, match="has 4 samples but 5 timestamps"):
        resample_behavior(slow_t, slow_v[:4], bins)


def test_block_ids_from_trials_outside_runs_and_gaps() -> None:
    t = np.r_[np.arange(10), 20 + np.arange(4)] * 0.1  # a gap between 0.9 and 2.0 s
    bins = frame_bins(t)
    assert block_ids(bins).tolist() == [0] * 10 + [1] * 4
    trials = np.array([[0.3, 0.6], [0.0, 0.3]])  # unsorted; frames from 0.6 s are in no trial
    assert block_ids(bins, trials).tolist() == [0] * 3 + [1] * 3 + [2] * 4 + [3] * 4


# ----------------------------------------------------------------------------- real NWB files


T, H, W = 40, 8, 6


def _frames(c: int | None = None, dtype: Any = np.uint8) -> np.ndarray:
    """(T, H, W[, c]) frames whose every pixel is the frame index (plus 100 per channel)."""
    shape = (T, H, W) if c is None else (T, H, W, c)
    ramp = np.arange(T).reshape(-1, *[1] * (len(shape) - 1))
    x = np.broadcast_to(ramp, shape).astype(np.float64)
    if c is not None:
        x = x + 100 * np.arange(c)
    return np.ascontiguousarray(x.astype(dtype))


def _spikes(times: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Two units' spike times around frame times ``times``, and their expected counts."""
    stops = np.r_[times[1:], times[-1] + np.median(np.diff(times))]
    mid = (times + stops) / 2
    unit0 = np.array([mid[0], mid[5], mid[5] - 1e-4, mid[9]])
    unit1 = np.array([times[3], times[0] - 1.0, stops[-1] + 0.5])  # 2 outside the stimulus
    counts = np.zeros((times.shape[0], 2), dtype=np.int64)
    counts[[0, 5, 9], 0] = [1, 2, 1]
    counts[3, 1] = 1
    return [unit0, unit1], counts


def _layout(kind: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """(NWBFile, expected stim in the contract's layout, expected frame times)."""
    nwb = new_nwb(kind)
    frames = _frames()
    if kind == "stimulus":  # ImageSeries in /stimulus, timed by starting_time + rate
        times = 2.0 + np.arange(T) / 30.0
        nwb.add_stimulus(
            ImageSeries(name="movie", data=frames, unit="n.a.", starting_time=2.0, rate=30.0)
        )
        want = frames
    elif kind == "acquisition":  # a colour OpticalSeries in /acquisition, with timestamps
        times = np.arange(T) / 60.0
        rgb = _frames(c=3)
        nwb.add_acquisition(
            OpticalSeries(
                name="screen",
                data=rgb,
                unit="n.a.",
                timestamps=times,
                distance=0.7,
                field_of_view=[0.3, 0.2],
                orientation="lower left",
            )
        )
        want = np.moveaxis(rgb, -1, 1)
    elif kind == "processing":  # float frames in a processing module, irregular times
        rng = np.random.default_rng(0)
        times = np.arange(T) / 30.0 + rng.uniform(-0.004, 0.004, T)
        floats = _frames(dtype=np.float64) / 10
        module = nwb.create_processing_module("stimuli", "what the animal saw")
        module.add(ImageSeries(name="noise", data=floats, unit="a.u.", timestamps=times))
        want = floats.astype(np.float32)
    elif kind == "indexed":  # an IndexSeries over an Images container
        times = np.arange(T) * 0.25
        images = [GrayscaleImage(name=f"scene{i}", data=_frames()[10 * i]) for i in range(4)]
        order = images[::-1]  # order_of_images, not the names, defines the indices
        container = Images(
            name="scenes",
            images=images,
            order_of_images=ImageReferences(name="order_of_images", data=order),
        )
        nwb.add_stimulus_template(container)
        idx = (np.arange(T) * 7) % 4
        nwb.add_stimulus(
            IndexSeries(
                name="scene_index",
                data=idx.astype(np.uint32),
                indexed_images=container,
                unit="N/A",
                timestamps=times,
            )
        )
        want = np.stack([order[i].data for i in idx])
    else:
        raise AssertionError(kind)
    return nwb, want, times


@pytest.mark.parametrize("kind", ["stimulus", "acquisition", "processing", "indexed"])
def test_import_layouts(tmp_path: Path, kind: str) -> None:
    nwb, want, times = _layout(kind)
    spikes, counts = _spikes(times)
    add_units(nwb, spikes)
    src = write_nwb(nwb, tmp_path / f"{kind}.nwb")
    out = tmp_path / "out" / f"{kind}.h5"
    res = import_nwb(src, out)
    assert res.num_bins == T and res.num_units == 2 and res.block_source == "none"
    assert validate_file(out, num_lags=10) == []
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["stim"][()], want)
        assert f["stim"].dtype == want.dtype
        np.testing.assert_array_equal(f["robs"][()], counts)
        np.testing.assert_array_equal(f["frame_times"][()], times)
        assert f["dfs"][()].all() and (f["blocks"][()] == 0).all()
        assert f.attrs["name"] == kind
        assert f.attrs["frame_rate"] == pytest.approx(1 / np.median(np.diff(times)), rel=1e-12)
    assert res.regular == (kind != "processing")
    assert list(out.parent.iterdir()) == [out]  # no temporary file left
    rep = inspect_file(out, DataConfig(num_lags=4))
    assert rep.problems == [] and rep.num_bins == T and rep.num_units == 2


def _rich_nwb(path: Path) -> Path:
    """60 frames at 30 Hz with a 1-s gap after frame 39, two trials, obs_intervals, and
    behaviour at 1 kHz (running), 10 Hz (pupil, with NaN), and a 2-D position at 90 Hz."""
    times = np.r_[np.arange(40), 70 + np.arange(20)] / 30.0
    nwb = new_nwb("rich")
    movie = np.zeros((60, 4, 4), np.uint8)
    nwb.add_stimulus(ImageSeries(name="movie", data=movie, unit="n.a.", timestamps=times))
    stops = np.r_[times[1:], times[-1] + 1 / 30]
    stops[39] = times[39] + 1 / 30
    mid = (times + stops) / 2
    add_units(
        nwb,
        [mid[[0, 10, 39, 45]], np.r_[mid[20], times[39] + 0.5]],  # unit 1: one spike in the gap
        [np.array([[0.0, 0.2], [0.5, 5.0]]), np.array([[-1.0, 5.0]])],
    )
    nwb.add_trial(start_time=0.0, stop_time=0.5)
    nwb.add_trial(start_time=0.5, stop_time=1.0)  # frames 30..39 and after the gap: no trial
    module = nwb.create_processing_module("behavior", "behaviour")
    run_t = np.arange(0.0, 3.2, 0.001)
    bts = BehavioralTimeSeries(name="BehavioralTimeSeries")
    speed = TimeSeries(
        name="speed", data=300.0 * run_t, unit="mm/s", timestamps=run_t, conversion=0.01
    )
    bts.add_timeseries(speed)
    module.add(bts)
    pupil = 5.0 + 0.5 * np.arange(0.0, 3.2, 0.1)
    pupil[3] = np.nan
    module.add(TimeSeries(name="pupil", data=pupil, unit="mm", rate=10.0, starting_time=0.0))
    pos_t = np.arange(0.0, 3.2, 1 / 90)
    xy = SpatialSeries(
        name="xy", data=np.stack([pos_t, -pos_t], 1), reference_frame="arena", timestamps=pos_t
    )
    module.add(Position(name="Position", spatial_series=xy))
    return write_nwb(nwb, path)


def _bin_means(t: np.ndarray, v: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    return np.array([v[(t >= a) & (t < b)].mean() for a, b in zip(start, stop, strict=True)])


def test_import_obs_intervals_behaviour_trials_and_gaps(tmp_path: Path) -> None:
    src = _rich_nwb(tmp_path / "rich.nwb")
    out = tmp_path / "rich.h5"
    res = import_nwb(src, out, behavior=["speed", "pupil", "Position/xy"], name="mouse1")
    assert res.block_source == "trials + gaps" and res.num_blocks == 4
    assert res.behavior_names == ("speed", "pupil", "xy_0", "xy_1")
    assert not res.regular and res.frame_rate == pytest.approx(30.0)
    with h5py.File(out) as f:
        times = f["frame_times"][()]
        stops = np.r_[times[1:], times[-1] + 1 / 30]
        stops[39] = times[39] + 1 / 30
        centre = (times + stops) / 2
        robs = f["robs"][()]
        assert robs[:, 0].nonzero()[0].tolist() == [0, 10, 39, 45]
        assert robs[:, 1].nonzero()[0].tolist() == [20]  # the spike in the gap is not counted
        dfs = f["dfs"][()]
        # Unit 0 is observed over [0, 0.2] and from 0.5 s: bins 0-5 and 15 on.
        assert dfs[:, 0].nonzero()[0].tolist() == [*range(6), *range(15, 60)]
        assert dfs[:, 1].all()
        blocks = f["blocks"][()]
        assert blocks.tolist() == [0] * 15 + [1] * 15 + [2] * 10 + [3] * 20
        beh = f["behavior"][()]
        assert list(f.attrs["behavior_names"]) == ["speed", "pupil", "xy_0", "xy_1"]
        assert f.attrs["name"] == "mouse1"
    # 1 kHz running (data * conversion = 3 t): the mean of the samples in each bin.
    run_t = np.arange(0.0, 3.2, 0.001)
    np.testing.assert_allclose(beh[:, 0], _bin_means(run_t, 3.0 * run_t, times, stops), rtol=1e-5)
    # 10 Hz pupil (slower than the frames): interpolated at the bins' centres, NaN dropped.
    np.testing.assert_allclose(beh[:, 1], 5.0 + 0.5 * centre, rtol=1e-6)
    # 90 Hz position: three samples per bin, their mean.
    pos_t = np.arange(0.0, 3.2, 1 / 90)
    np.testing.assert_allclose(beh[:, 2], _bin_means(pos_t, pos_t, times, stops), rtol=1e-6)
    np.testing.assert_allclose(beh[:, 3], -beh[:, 2], rtol=1e-6)
    assert validate_file(out, num_lags=5) == []


def test_default_stimulus_skips_imaging_and_blocks_come_from_epochs(tmp_path: Path) -> None:
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = new_nwb("imaging")
    _movie(nwb)
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(
        name="plane",
        optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0),
        description="V1 L2/3",
        device=device,
        excitation_lambda=920.0,
        indicator="GCaMP6s",
        location="V1",
    )
    nwb.add_acquisition(
        TwoPhotonSeries(
            name="two_photon", data=np.zeros((5, 4, 4)), imaging_plane=plane, rate=15.0, unit="a"
        )
    )
    _units(nwb)
    nwb.add_epoch(start_time=0.0, stop_time=0.6, tags=["gratings"])
    nwb.add_epoch(start_time=0.6, stop_time=2.0, tags=["movie"])
    res = import_nwb(write_nwb(nwb, tmp_path / "x.nwb"), tmp_path / "s.h5")
    assert res.stimulus == "stimulus/presentation/movie (ImageSeries)"
    assert res.block_source == "epochs" and res.num_blocks == 2
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["blocks"][()].tolist() == [0] * 18 + [1] * 22


def test_import_resamples_to_a_frame_rate(tmp_path: Path) -> None:
    nwb, frames, times = _layout("stimulus")  # 30 Hz from 2.0 s
    spikes, counts = _spikes(times)
    add_units(nwb, spikes)
    src = write_nwb(nwb, tmp_path / "s.nwb")
    res = import_nwb(src, tmp_path / "s60.h5", frame_rate=60.0)
    assert res.num_bins == 2 * T and res.frame_rate == 60.0
    with h5py.File(tmp_path / "s60.h5") as f:
        np.testing.assert_array_equal(f["stim"][()], np.repeat(frames, 2, axis=0))
        assert f.attrs["frame_rate"] == 60.0
        robs = f["robs"][()]
        np.testing.assert_array_equal(robs.reshape(T, 2, 2).sum(1), counts)  # same spikes
    assert validate_file(tmp_path / "s60.h5") == []


def test_counts_above_255_widen_robs(tmp_path: Path) -> None:
    nwb = new_nwb("slow")
    nwb.add_stimulus(ImageSeries(name="movie", data=_frames(), unit="n.a.", rate=1.0))
    add_units(nwb, [np.r_[np.linspace(3.0, 3.9, 300), 7.5], np.array([0.5])])  # 300 in bin 3
    res = import_nwb(write_nwb(nwb, tmp_path / "x.nwb"), tmp_path / "s.h5")
    assert res.silent_units == 0
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["robs"].dtype == np.uint16
        assert f["robs"][3, 0] == 300 and f["robs"][7, 0] == 1 and f["robs"][0, 1] == 1


def test_import_streams_the_stimulus_by_chunks(tmp_path: Path) -> None:
    # 96 MiB of frames; reading them whole (or holding two copies) peaks far above 0.7x that.
    t = 1536
    movie = np.zeros((t, 256, 256), np.uint8)
    movie[:, 0, 0] = np.arange(t) % 256
    nwb = new_nwb("big")
    nwb.add_stimulus(ImageSeries(name="movie", data=movie, unit="n.a.", rate=60.0))
    add_units(nwb, [np.array([1.0, 2.0])])
    src = write_nwb(nwb, tmp_path / "big.nwb")
    del nwb, movie
    tracemalloc.start()
    try:
        import_nwb(src, tmp_path / "big.h5")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.7 * t * 256 * 256, f"peak {peak / 2**20:.0f} MiB"
    with h5py.File(tmp_path / "big.h5") as f:
        np.testing.assert_array_equal(f["stim"][:, 0, 0], np.arange(t) % 256)


# ----------------------------------------------------------------------------- errors


def _movie(nwb: Any, name: str = "movie", where: str = "stimulus") -> None:
    series = ImageSeries(name=name, data=_frames(), unit="n.a.", rate=30.0)
    (nwb.add_stimulus if where == "stimulus" else nwb.add_acquisition)(series)


def _units(nwb: Any) -> None:
    add_units(nwb, [np.array([0.1, 0.5])])


def _no_image(tmp: Path) -> Path:
    nwb = new_nwb()
    nwb.add_acquisition(TimeSeries(name="lick", data=np.zeros(5), unit="n", rate=1.0))
    _units(nwb)
    return write_nwb(nwb, tmp / "x.nwb")


def _two_images(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb, "movie_a")
    _movie(nwb, "movie_b", where="acquisition")
    _units(nwb)
    return write_nwb(nwb, tmp / "x.nwb")


def _plain(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    _units(nwb)
    return write_nwb(nwb, tmp / "x.nwb")


def _no_times(tmp: Path) -> Path:
    path = _plain(tmp)
    with h5py.File(path, "a") as f:  # what a hand-rolled writer may produce
        del f["stimulus/presentation/movie/starting_time"]
    return path


def _no_spike_times(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    nwb.add_unit_column("quality", "sorting quality")
    nwb.add_unit(quality="good")
    return write_nwb(nwb, tmp / "x.nwb")


def _no_units(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    return write_nwb(nwb, tmp / "x.nwb")


def _units_elsewhere(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    add_units(nwb, [np.array([100.0, 101.0]), np.array([150.0])])
    return write_nwb(nwb, tmp / "x.nwb")


def _behaviour_elsewhere(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    _units(nwb)
    nwb.add_acquisition(
        TimeSeries(name="running", data=np.zeros(50), unit="m/s", rate=10.0, starting_time=0.6)
    )
    return write_nwb(nwb, tmp / "x.nwb")


def _two_speeds(tmp: Path) -> Path:
    nwb = new_nwb()
    _movie(nwb)
    _units(nwb)
    for module in ("wheel", "treadmill"):
        nwb.create_processing_module(module, module).add(
            TimeSeries(name="speed", data=np.zeros(50), unit="m/s", rate=30.0)
        )
    return write_nwb(nwb, tmp / "x.nwb")


def _external(tmp: Path, present: bool) -> Path:
    nwb = new_nwb()
    nwb.add_stimulus(
        ImageSeries(
            name="movie",
            external_file=["movie.avi"],
            starting_frame=[0],
            format="external",
            timestamps=np.arange(T) / 30.0,
            unit="n.a.",
        )
    )
    _units(nwb)
    if present:
        (tmp / "movie.avi").write_bytes(b"RIFF")
    return write_nwb(nwb, tmp / "x.nwb")


def _nan_frames(tmp: Path) -> Path:
    nwb = new_nwb()
    frames = _frames(dtype=np.float32)
    frames[3, 1, 1] = np.nan
    nwb.add_stimulus(ImageSeries(name="movie", data=frames, unit="n.a.", rate=30.0))
    _units(nwb)
    return write_nwb(nwb, tmp / "x.nwb")


ERRORS: list[tuple[str, Callable[[Path], Path], dict[str, Any], str]] = [
    ("no image", _no_image, {}, r"no ImageSeries, OpticalSeries or IndexSeries in the file"),
    (
        "several",
        _two_images,
        {},
        r"has 2 image series \(acquisition/movie_b \(ImageSeries\), "
        r"stimulus/presentation/movie_a \(ImageSeries\)\); pass the stimulus' name to --stimulus",
    ),
    (
        "unknown stimulus",
        _two_images,
        {"stimulus": "nope"},
        r"no ImageSeries called 'nope'; the file has acquisition/movie_b \(ImageSeries\), "
        r"stimulus/presentation/movie_a \(ImageSeries\); pass one of them to --stimulus",
    ),
    (
        "no times",
        _no_times,
        {},
        r"stimulus/presentation/movie: its frames have no times \(neither `timestamps` nor",
    ),
    ("no spike times", _no_spike_times, {}, r"the Units table has no spike_times column"),
    ("no units", _no_units, {}, r"no Units table \(or an empty one\)"),
    (
        "units outside",
        _units_elsewhere,
        {},
        r"no spike of the 2 units falls in the stimulus' bins \(0.000 s to 1.333 s\); their "
        r"spikes run from 100.000 s to 150.000 s: check that the units and the stimulus share",
    ),
    (
        "behaviour outside",
        _behaviour_elsewhere,
        {"behavior": ["running"]},
        r"behaviour 'running': has samples from 0.600 s to 5.500 s but the stimulus runs from "
        r"0.000 s to 1.333 s",
    ),
    (
        "unknown behaviour",
        _plain,
        {"behavior": ["running"]},
        r"no TimeSeries called 'running' for --behavior; the file's TimeSeries: none",
    ),
    (
        "two behaviours of one name",
        _two_speeds,
        {"behavior": ["speed"]},
        r"2 TimeSeries are called 'speed' \(processing/treadmill/speed, processing/wheel/speed\); "
        r"pass the full path to --behavior",
    ),
    (
        "external missing",
        lambda tmp: _external(tmp, present=False),
        {},
        r"the frames are in external files that are missing: movie.avi \(looked next to x.nwb\)",
    ),
    (
        "external present",
        lambda tmp: _external(tmp, present=True),
        {},
        r"the frames are in external files \(movie.avi\), which import-nwb cannot decode",
    ),
    ("NaN frames", _nan_frames, {}, r"out/s.h5: stim: 1 values are NaN or Inf"),
]


@pytest.mark.parametrize(
    ("build", "kwargs", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_import_errors_are_one_line_and_leave_nothing(
    tmp_path: Path, build: Callable[[Path], Path], kwargs: dict[str, Any], message: str
) -> None:
    src = build(tmp_path)
    out = tmp_path / "out" / "s.h5"
    with pytest.raises(DataError, match=message) as err:
        import_nwb(src, out, **kwargs)
    assert "\n" not in str(err.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_import_refuses_what_is_not_nwb(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        import_nwb(tmp_path / "gone.nwb", tmp_path / "s.h5")
    (tmp_path / "text.nwb").write_text("hello")
    with pytest.raises(DataError, match="not an HDF5 file"):
        import_nwb(tmp_path / "text.nwb", tmp_path / "s.h5")


def test_a_failed_import_keeps_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    import_nwb(_plain(tmp_path), out)
    before = out.read_bytes()
    with pytest.raises(DataError):
        import_nwb(_nan_frames(tmp_path), out)
    assert out.read_bytes() == before and sorted(tmp_path.iterdir()) == [out, tmp_path / "x.nwb"]


# ----------------------------------------------------------------------------- the CLI


def test_cli_import_then_inspect(tmp_path: Path) -> None:
    src = _rich_nwb(tmp_path / "rich.nwb")
    out = tmp_path / "sessions" / "rich.h5"
    res = runner.invoke(
        app,
        [
            *("data", "import-nwb", str(src), "--out", str(out), "--stimulus", "movie"),
            *("--behavior", "speed", "--behavior", "pupil", "--name", "m1"),
        ],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    assert "stimulus/presentation/movie (ImageSeries)" in res.output
    assert "4 (from trials + gaps)" in res.output and "speed, pupil" in res.output
    res = runner.invoke(app, ["data", "inspect", str(out.parent), "--num-lags", "5"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "m1" in res.output and "1x4x4 uint8" in res.output and "none" in res.output
    res = runner.invoke(app, ["data", "import-nwb", str(src), "--out", str(out), "--stimulus", "x"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "no ImageSeries called 'x'" in res.output


def test_cli_import_refuses_to_write_over_its_nwb_file(tmp_path: Path) -> None:
    src = _rich_nwb(tmp_path / "rich.nwb")
    before = src.read_bytes()
    link = tmp_path / "link.h5"  # the same file by another name
    link.symlink_to(src)
    for out in (src, tmp_path / "." / "rich.nwb", link):
        res = runner.invoke(
            app, ["data", "import-nwb", str(src), "--out", str(out), "--stimulus", "movie"]
        )
        assert res.exit_code == 2, res.output
        assert res.output == (
            f"error: --out {out}: is the NWB file {src} that this command reads (writing it "
            "would destroy the input); pass another --out\n"
        )
    assert src.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [link, src]  # nothing half-written beside it


def _python(code: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp, timeout=120
    )


def test_without_pynwb_the_command_says_what_to_install(tmp_path: Path) -> None:
    src = _plain(tmp_path)
    # pynwb made unimportable (None in sys.modules), as on an install without the [nwb] extra.
    code = (
        "import sys; sys.modules['pynwb'] = None; sys.argv = ['vivit-hpo', 'data', "
        f"'import-nwb', {str(src)!r}, '--out', 's.h5']; from vivit_hpo.cli import main; main()"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "error: importing NWB files needs pynwb, which is not installed; run "
        "`pip install 'vivit-hpo[nwb]'`"
    )
    help_code = (
        "import sys; from typer.testing import CliRunner; from vivit_hpo.cli import app; "
        "r = CliRunner().invoke(app, ['data', 'import-nwb', '--help']); "
        "print(r.exit_code, 'pynwb' in sys.modules, '--behavior' in r.output)"
    )
    proc = _python(help_code, tmp_path)
    assert proc.stdout.split() == ["0", "False", "True"], proc.stderr


# ----------------------------------------------------------------------------- end to end


TINY = [
    "model.core.embed_dim=16",
    "model.core.num_heads=2",
    "model.core.num_spatial_blocks=1",
    "model.core.num_temporal_blocks=1",
    "model.core.kernel_size=[2,4,4]",
    "model.core.stride=[2,4,4]",
    "model.core.num_registers=1",
    "model.modulator.hidden_dim=4",
    "data.num_lags=6",
    "train.batch_size=16",
    "train.steps_per_epoch=6",
    "data.max_val_bins=64",
    "train.lr=3e-3",
    "train.epochs=2",
    "train.early_stopping_patience=null",
]


def test_simulated_population_imported_from_nwb_trains_to_the_same_bps(tmp_path: Path) -> None:
    from vivit_hpo.training import Trainer, evaluate

    sim = synthesize(tmp_path / "direct", sessions=1, neurons=8, frames=2400, size=(16, 16), seed=7)
    direct = sim.files[0]
    src = session_to_nwb(direct, tmp_path / "sim00.nwb", seed=1)
    imported = tmp_path / "imported" / "sim00.h5"
    res = import_nwb(src, imported, behavior=["run_speed", "pupil", "eye_position"])
    assert res.name == "sim00" and res.frame_rate == 60.0 and res.block_source == "trials"

    with h5py.File(direct) as a, h5py.File(imported) as b:
        for key in ("stim", "robs", "dfs", "blocks"):
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
        np.testing.assert_allclose(b["behavior"][()], a["behavior"][()], rtol=0, atol=1e-6)
        assert b.attrs["frame_rate"] == a.attrs["frame_rate"]

    cfg = load_run_config(None, TINY)
    scores = {}
    for label, path in (("direct", direct), ("imported", imported)):
        data = load_sessions([path], cfg.data)
        (session,) = data.sessions
        # The imported file has no `split`: the seeded split draws the simulator's own.
        with h5py.File(direct) as f:
            np.testing.assert_array_equal(session.split, f["split"][()])
        trainer = Trainer(cfg, data, device="cpu")
        reports = list(trainer.epochs())
        test = evaluate(trainer.model, data, "test", 64)["sim00"]
        scores[label] = (*(r.train_loss for r in reports), reports[-1].val_bps, test.bps)
    # The same data, seed and CPU arithmetic: the very same numbers, not merely close ones.
    assert scores["imported"] == scores["direct"]
    assert np.isfinite(scores["direct"]).all()
