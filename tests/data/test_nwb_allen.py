"""import-nwb on files in the Allen Brain Observatory / OpenScope layout (written with pynwb by
``allen_nwb``, not by the project's writer): presentation tables over a movie template, unit
selection as labs do it, invalid times, running speed over intervals, pupil fits and blinks;
and what must be refused (a template as a timeline, NaN or index timestamps, NWB 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from allen_nwb import ALLEN_QC_KEEPS, NUM_FRAMES, UNITS, AllenSession, write_allen, write_nwb1
from nwb_helpers import add_units, new_nwb, write_nwb
from pynwb.image import ImageSeries
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.data import import_nwb, validate_file
from vivit_hpo.errors import DataError

ORDERED = "natural_movie_one_presentations"
SHUFFLED = "natural_movie_one_shuffled_presentations"
GREY = 127  # the middle of the 0..255 template
runner = CliRunner()


def _shown(s: AllenSession) -> dict[str, np.ndarray]:
    """Every presentation row of both tables in time order: start, stop, frame, table."""
    rows = [s.tables[ORDERED], s.tables[SHUFFLED]]
    start = np.concatenate([r.start for r in rows])
    order = np.argsort(start, kind="stable")
    return {
        "start": start[order],
        "stop": np.concatenate([r.stop for r in rows])[order],
        "frame": np.concatenate([r.frame for r in rows])[order],
        "table": np.concatenate([np.full(r.start.size, r.name) for r in rows])[order],
    }


def _counts(spikes: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    return np.array(
        [np.count_nonzero((spikes >= a) & (spikes < b)) for a, b in zip(start, stop, strict=True)]
    )


def _check_bins(s: AllenSession, out: Path, unit_ids: list[int]) -> dict[str, np.ndarray]:
    """stim[i] == template[frame[i]] (grey for -1 / NaN), counts within each row's interval."""
    shown = _shown(s)
    with h5py.File(out) as f:
        got = {k: f[k][()] for k in f}
        got["frame_rate"] = f.attrs["frame_rate"]
    assert validate_file(out, num_lags=4) == []
    t = shown["start"].size
    assert got["stim"].shape == (t, *s.template.shape[1:]) and got["stim"].dtype == np.uint8
    for i, fr in enumerate(shown["frame"]):
        if np.isnan(fr) or fr == -1:
            assert (got["stim"][i] == GREY).all() and got["frame_index"][i] == -1, i
        else:
            np.testing.assert_array_equal(got["stim"][i], s.template[int(fr)], err_msg=str(i))
            assert got["frame_index"][i] == int(fr)
    np.testing.assert_array_equal(got["frame_times"], shown["start"])
    assert got["frame_rate"] == pytest.approx(1 / np.median(np.diff(shown["start"])))
    assert got["unit_ids"].tolist() == unit_ids
    want = np.stack([_counts(s.spikes[u], shown["start"], shown["stop"]) for u in unit_ids], 1)
    np.testing.assert_array_equal(got["robs"], want)
    assert (got["robs"].sum(0) > 20).all()  # the check counted real spikes
    return got


@pytest.mark.parametrize("where", ["stimulus/templates", "npy"])
def test_allen_session_bins_are_what_was_shown(tmp_path: Path, where: str) -> None:
    s = write_allen(tmp_path / "715093703.nwb", template_in_file=where != "npy")
    templates: list[str] = []
    if where == "npy":  # Visual Coding Neuropixels files keep no template: AllenSDK gives it
        np.save(tmp_path / "natural_movie_one.npy", s.template)
        templates = [str(tmp_path / "natural_movie_one.npy")]
    out = tmp_path / "out" / "m1.h5"
    res = import_nwb(
        s.path,
        out,
        presentations=[SHUFFLED, ORDERED],  # given out of time order: the rows are merged by time
        templates=templates,
        allen_qc=True,
        behavior=["running_speed", "pupil_ellipse_fits.width", "pupil_tracking.area"],
        blinks="likely_blink",
    )
    got = _check_bins(s, out, ALLEN_QC_KEEPS)
    assert list(out.parent.iterdir()) == [out]
    # Repeats: two in order, a third after a pause (same stimulus_block), then two shuffled
    # permutations, each with its blank row; blocks: the pause, the new table and each new
    # stimulus_block (the shuffled ones back to back).
    assert got["repeat"].tolist() == [0] * 12 + [1] * 12 + [2] * 12 + [3] * 13 + [4] * 13
    assert got["blocks"].tolist() == [0] * 24 + [1] * 12 + [2] * 13 + [3] * 13
    assert res.num_repeats == 5 and res.grey_bins == 2 and res.num_blocks == 4
    assert res.units_in_file == len(UNITS) and res.unit_selection == "--allen-qc"

    shown = _shown(s)
    start, stop = shown["start"], shown["stop"]
    # dfs: the probeA interval only for the probeA unit, the all_probes one for both, the
    # optotagging one for none; blinks for both.
    hit = {
        iv: (start < b) & (stop > a)
        for (a, b, _), iv in zip(s.invalid, ("A", "all", "opto"), strict=True)
    }
    cam_t, area, blink = s.pupil
    on = cam_t[blink]
    blinked = (start < on.max() + 1 / 60) & (stop > on.min())
    assert hit["A"].any() and hit["all"].any() and hit["opto"].any() and blinked.any()
    np.testing.assert_array_equal(got["dfs"][:, 0], ~(hit["A"] | hit["all"] | blinked))
    np.testing.assert_array_equal(got["dfs"][:, 1], ~(hit["all"] | blinked))
    assert res.invalid_intervals == 2 and res.blink_bins == int(blinked.sum())

    # Running speed: each sample covers [start, end); a bin takes the overlap-weighted mean.
    run_a, run_b, speed = s.run
    w = np.clip(np.minimum(stop[:, None], run_b) - np.maximum(start[:, None], run_a), 0, None)
    np.testing.assert_allclose(got["behavior"][:, 0], (w * speed).sum(1) / w.sum(1), rtol=1e-5)
    # The ellipse-fit table's width (60 Hz: two samples a bin, their mean).
    fit_t, width = s.fits
    inside = (fit_t >= start[:, None]) & (fit_t < stop[:, None])
    assert (inside.sum(1) >= 2).all()
    np.testing.assert_allclose(
        got["behavior"][:, 1], (inside * width).sum(1) / inside.sum(1), rtol=1e-5
    )
    # Pupil area: the samples during the blink (a collapsed fit, 0) are dropped, not averaged.
    keep = (fit_t[None, :] >= start[:, None]) & (fit_t[None, :] < stop[:, None]) & ~blink
    n = keep.sum(1)
    want = np.where(
        n >= 2,
        (keep * area).sum(1) / np.maximum(n, 1),
        np.interp((start + stop) / 2, cam_t[~blink], area[~blink]),
    )
    np.testing.assert_allclose(got["behavior"][:, 2], want, rtol=1e-5)
    assert (got["behavior"][:, 2] > 300).all()


SELECTIONS: list[tuple[str, dict[str, Any], list[int]]] = [
    ("all", {}, [u[0] for u in UNITS]),
    (
        "filter",
        {"unit_filter": "quality == 'good' and presence_ratio > 0.9"},
        [950001, 950003, 950004, 950005, 950006],
    ),
    ("region", {"regions": ["VISp"]}, [950001, 950002, 950004, 950005, 950006]),
    ("qc and region", {"allen_qc": True, "regions": ["VISp", "CA1"]}, [950001]),
    (
        "in",
        {"unit_filter": "quality not in ('noise',) and not (isi_violations > 0.5)"},
        [950001, 950003, 950004, 950005],
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "kept"), [s[1:] for s in SELECTIONS], ids=[s[0] for s in SELECTIONS]
)
def test_units_are_selected_as_labs_do(
    tmp_path: Path, kwargs: dict[str, Any], kept: list[int]
) -> None:
    s = write_allen(tmp_path / "s.nwb")
    out = tmp_path / "s.h5"
    res = import_nwb(s.path, out, presentations=[ORDERED, SHUFFLED], **kwargs)
    _check_bins(s, out, kept)
    assert res.num_units == len(kept) and res.units_in_file == len(UNITS)


def _allen(tmp: Path) -> Path:
    return write_allen(tmp / "s.nwb").path


def _short_template(tmp: Path) -> Path:
    np.save(tmp / "short.npy", np.zeros((NUM_FRAMES - 4, 6, 8), np.uint8))
    return _allen(tmp)


def _timed_movie(tmp: Path, stamps: np.ndarray) -> Path:
    """A movie in stimulus/presentation whose timestamps are not times."""
    nwb = new_nwb()
    frames = np.zeros((NUM_FRAMES, 6, 8), np.uint8)
    nwb.add_stimulus(ImageSeries(name="movie", data=frames, unit="NA", timestamps=stamps))
    add_units(nwb, [np.array([0.1, 0.2])])
    return write_nwb(nwb, tmp / "x.nwb")


ERRORS: list[tuple[str, Callable[[Path], Path], dict[str, Any], str]] = [
    (
        "template as --stimulus",
        _allen,
        {"stimulus": "natural_movie_one"},
        r"stimulus/templates/natural_movie_one is a movie template, not a timeline \(it is kept "
        r"in stimulus/templates\); its frames are shown by the presentations tables "
        r"intervals/natural_movie_one_presentations, intervals/natural_movie_one_shuffled_pres"
        r"entations; pass --presentations natural_movie_one_presentations --template natural_"
        r"movie_one$",
    ),
    (
        "template by default",
        _allen,
        {},
        r"the file's image series are movie templates, not timelines \(stimulus/templates/natura"
        r"l_movie_one: it is kept in stimulus/templates\); its frames are shown by the presentat",
    ),
    (
        "NaN timestamps",
        lambda tmp: _timed_movie(tmp, np.full(NUM_FRAMES, np.nan)),
        {"stimulus": "movie"},
        r"stimulus/presentation/movie is a movie template, not a timeline \(its timestamps are "
        r"NaN\); no presentations table or IndexSeries in the file is named after it; pass "
        r"--presentations TABLE --template movie$",
    ),
    (
        "NaN timestamps by default",
        lambda tmp: _timed_movie(tmp, np.full(NUM_FRAMES, np.nan)),
        {},
        r"the file's image series are movie templates, not timelines \(stimulus/presentation/mo"
        r"vie: its timestamps are NaN\)",
    ),
    (
        "index timestamps",
        lambda tmp: _timed_movie(tmp, np.arange(NUM_FRAMES, dtype=np.float64)),
        {"stimulus": "movie"},
        r"\(its timestamps are 0, 1, \.\.\., 11 \(frame indices, not times\)\)",
    ),
    (
        "NWB 1",
        lambda tmp: write_nwb1(tmp / "v1.nwb"),
        {},
        r"v1.nwb: an NWB 1 file \(nwb_version 'NWB-1.0.5'\), which pynwb cannot read; convert "
        r"it to NWB 2 first",
    ),
    (
        "unsafe filter",
        _allen,
        {"presentations": [ORDERED], "unit_filter": "quality == 'good' and __import__('os')"},
        r"^--unit-filter \"quality == 'good' and __import__\('os'\)\": `a call` is not allowed",
    ),
    (
        "unknown column",
        _allen,
        {"presentations": [ORDERED], "unit_filter": "qualty == 'good'"},
        r"--unit-filter \"qualty == 'good'\": no column 'qualty' in the Units table with one "
        r"value per unit \(it has: amplitude_cutoff, firing_rate, isi_violations, peak_channel",
    ),
    (
        "no unit in region",
        _allen,
        {"presentations": [ORDERED], "regions": ["VISl"]},
        r"--region VISl: no unit is there \(locations from the electrodes named by the Units "
        r"table's peak_channel_id\); the units' regions: VISp \(5\), LGd \(1\)$",
    ),
    (
        "nothing kept",
        _allen,
        {"presentations": [ORDERED], "unit_filter": "presence_ratio > 1"},
        r"units: --unit-filter 'presence_ratio > 1' keeps none of the 6 units",
    ),
    (
        "unknown table",
        _allen,
        {"presentations": ["natural_movie_three"]},
        r"no intervals table called 'natural_movie_three' for --presentations; the file's "
        r"presentation tables \(with a frame column\): intervals/natural_movie_one_presentations,",
    ),
    (
        "table without frames",
        _allen,
        {"presentations": ["spontaneous"]},
        r"intervals/spontaneous_presentations has no frame column",
    ),
    (
        "frame outside the template",
        _short_template,
        {"presentations": [ORDERED], "templates": ["{tmp}/short.npy"]},
        r"presentations natural_movie_one_presentations: row 8 shows frame 8 but the template "
        r"has 8 frames \(0..7\); pass the template this table shows with --template",
    ),
    (
        "both stimulus and presentations",
        _allen,
        {"presentations": [ORDERED], "stimulus": "natural_movie_one"},
        r"--stimulus and --presentations both given",
    ),
]


@pytest.mark.parametrize(
    ("build", "kwargs", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_refused_in_one_line_leaving_nothing(
    tmp_path: Path, build: Callable[[Path], Path], kwargs: dict[str, Any], message: str
) -> None:
    src = build(tmp_path)
    kwargs = {
        k: [x.format(tmp=tmp_path) for x in v] if k == "templates" else v for k, v in kwargs.items()
    }
    out = tmp_path / "out" / "s.h5"
    with pytest.raises(DataError, match=message) as err:
        import_nwb(src, out, **kwargs)
    assert "\n" not in str(err.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_presentations_resampled_to_a_frame_rate(tmp_path: Path) -> None:
    # A 30 Hz table over an OpenScope-style template (named like the table, frames in `Image`),
    # imported at 60 Hz: every row's frame shows in two bins, its spikes split between them.
    from pynwb.epoch import TimeIntervals

    nwb = new_nwb("openscope")
    movie = np.arange(NUM_FRAMES, dtype=np.uint8)[:, None, None] * np.ones((1, 6, 8), np.uint8)
    nwb.add_stimulus_template(
        ImageSeries(name="natmovie_presentations", data=movie, unit="NA", rate=1.0)
    )
    table = TimeIntervals(name="natmovie_presentations", description="rows")
    table.add_column(name="Image", description="frame")
    frames = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    start = 5.0 + np.arange(len(frames)) / 30
    for a, f in zip(start, frames, strict=True):
        table.add_interval(start_time=a, stop_time=a + 1 / 30, Image=float(f))
    nwb.add_time_intervals(table)
    spikes = start + 1 / 120  # one spike in the first half of every row
    add_units(nwb, [spikes])
    src = write_nwb(nwb, tmp_path / "o.nwb")
    res = import_nwb(src, tmp_path / "o.h5", presentations=["natmovie"], frame_rate=60.0)
    assert res.num_bins == 2 * len(frames) and res.frame_rate == 60.0
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_array_equal(f["stim"][:, 0, 0], np.repeat(frames, 2))
        np.testing.assert_array_equal(f["frame_index"][()], np.repeat(frames, 2))
        np.testing.assert_array_equal(f["robs"][:, 0], np.tile([1, 0], len(frames)))
        assert f.attrs["nwb_templates"].tolist() == ["stimulus/templates/natmovie_presentations"]


def test_cli_imports_presentations(tmp_path: Path) -> None:
    s = write_allen(tmp_path / "s.nwb")
    out = tmp_path / "m1.h5"
    args = ["data", "import-nwb", str(s.path), "--out", str(out)]
    res = runner.invoke(
        app,
        [
            *args,
            *("--presentations", ORDERED, "--presentations", SHUFFLED),
            *("--template", "natural_movie_one", "--allen-qc", "--region", "VISp"),
            *("--region", "LGd", "--behavior", "running_speed", "--blinks", "likely_blink"),
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "2 of 6 (--allen-qc, --region VISp LGd)" in res.output
    assert "5 (2 grey bins)" in res.output and "stimulus_block + gaps" in res.output
    _check_bins(s, out, ALLEN_QC_KEEPS)
    res = runner.invoke(app, [*args, "--stimulus", "natural_movie_one"])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "is a movie template, not a timeline" in res.output
