"""Sensorium 2023 import: mouse folders written with numpy in the competition's layout, the
bins checked against what was shown, bad layouts refused, the CLI."""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from sensorium_helpers import WITHHELD, Mouse, write_mouse
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import DataConfig
from vivit_hpo.data import import_sensorium, load_sessions, validate_file
from vivit_hpo.data.sensorium import BEHAVIOR_NAMES, trial_length
from vivit_hpo.errors import DataError

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
TIERS = [
    *["train"] * 5,
    *["oracle"] * 2,
    "live_test_main",
    "live_test_bonus",
    "final_test_main",
    "final_test_bonus",
    "final_test_main",
]
SPLIT = {"train": 0, "oracle": 1, "live_test_main": 2, "live_test_bonus": 2}


def _runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the runs of equal values of ``x``."""
    edges = np.flatnonzero(x[1:] != x[:-1]) + 1
    bounds = np.r_[0, edges, x.size]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


@pytest.fixture()
def mouse(tmp_path: Path) -> Mouse:
    return write_mouse(tmp_path / "dynamic1-2-3-Video-abc", TIERS, seed=3)


# ----------------------------------------------------------------------------- pure helper


def test_trial_length_stops_at_the_first_nan_frame_of_any_array() -> None:
    a = np.ones((2, 3, 10))
    b = np.ones((4, 10))
    assert trial_length(a, b) == 10
    b[2, 7:] = np.nan  # one neuron's padding is enough
    assert trial_length(a, b) == 7
    a[0, 1, 4] = np.inf  # a hole in the video, before the padding
    assert trial_length(a, b) == 4
    b[:, 0] = np.nan
    assert trial_length(a, b) == 0


# ----------------------------------------------------------------------------- the mapping


def test_bins_are_the_frames_shown_and_the_responses_recorded(mouse: Mouse, tmp_path: Path) -> None:
    out = tmp_path / "sessions" / "m1.h5"
    res = import_sensorium(mouse.folder, out)
    kept = [i for i in mouse.ids if mouse.tiers[i] not in WITHHELD]
    with h5py.File(out, "r") as f:
        stim, robs, beh = f["stim"][()], f["robs"][()], f["behavior"][()]
        blocks, split = f["blocks"][()], f["split"][()]
        attrs = dict(f.attrs)
        unit_ids, coords = f["unit_ids"][()], f["cell_motor_coordinates"][()]
    # One block per kept trial, in numeric trial-id order (not the files' text order), each
    # cut at its NaN padding.
    runs = _runs(blocks)
    assert [int(blocks[a]) for a, _ in runs] == kept
    assert [b - a for a, b in runs] == [mouse.lengths[i] for i in kept]
    assert stim.dtype == np.uint8 and stim.shape == (sum(mouse.lengths[i] for i in kept), 8, 12)
    for (a, b), tid in zip(runs, kept, strict=True):
        n = mouse.lengths[tid]
        for k in range(n):  # stim[i] is the frame shown in bin i
            np.testing.assert_array_equal(stim[a + k], mouse.videos[tid][:, :, k])
        resp = mouse.responses[tid][:, :n].T
        np.testing.assert_array_equal(robs[a:b], np.maximum(resp, 0))  # negatives set to 0
        want = np.concatenate([mouse.behavior[tid][:, :n], mouse.pupil_center[tid][:, :n]]).T
        np.testing.assert_allclose(beh[a:b], want, rtol=1e-6)
        assert (split[a:b] == SPLIT[mouse.tiers[tid]]).all()
    negatives = sum(int((mouse.responses[i][:, : mouse.lengths[i]] < 0).sum()) for i in kept)
    assert negatives > 0 and res.negative == negatives and res.most_negative == pytest.approx(-0.01)
    assert res.withheld == {"final_test_main": 2, "final_test_bonus": 1}
    assert res.kept == {"train": 5, "oracle": 2, "live_test_main": 1, "live_test_bonus": 1}
    assert res.empty == 0 and res.cut == 0
    assert res.padding == sum(40 - mouse.lengths[i] for i in kept)
    assert res.bins == {s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))}
    assert list(attrs["behavior_names"]) == list(BEHAVIOR_NAMES)
    assert attrs["response_kind"] == "calcium" and attrs["frame_rate"] == 30.0
    assert attrs["name"] == "m1"
    np.testing.assert_array_equal(unit_ids, mouse.unit_ids)
    np.testing.assert_array_equal(coords, mouse.coordinates)

    # The project's own contract check and loader take it as it is.
    assert validate_file(out, num_lags=6) == []
    data = load_sessions([out], DataConfig(num_lags=6))
    meta = data.metas[0]
    assert meta.response_kind == "calcium" and meta.num_units == 5
    assert meta.behavior_names == BEHAVIOR_NAMES and meta.frame_rate == 30.0
    assert data.num_samples("train") and data.num_samples("val") and data.num_samples("test")


def test_videos_that_are_not_whole_numbers_stay_float32(tmp_path: Path) -> None:
    m = write_mouse(tmp_path / "mouse", ["train", "train", "oracle"], whole_frames=False)
    out = tmp_path / "s.h5"
    res = import_sensorium(m.folder, out, frame_rate=29.97, name="other")
    assert res.stim_dtype == "float32"
    with h5py.File(out, "r") as f:
        assert f["stim"].dtype == np.float32
        np.testing.assert_array_equal(f["stim"][0], m.videos[m.ids[0]][:, :, 0].astype(np.float32))
        assert f.attrs["frame_rate"] == 29.97 and f.attrs["name"] == "other"


def test_a_hole_cuts_a_trial_and_a_nan_first_frame_drops_it(tmp_path: Path) -> None:
    m = write_mouse(tmp_path / "mouse", ["train", "train", "oracle", "train"])
    a, b = m.ids[0], m.ids[1]
    beh = m.behavior[a].copy()
    beh[1, 5] = np.nan  # running speed lost at frame 5: the trial ends there
    np.save(m.folder / "data" / "behavior" / f"{a}.npy", beh)
    video = m.videos[b].copy()
    video[..., 0] = np.nan
    np.save(m.folder / "data" / "videos" / f"{b}.npy", video)
    res = import_sensorium(m.folder, tmp_path / "s.h5")
    assert res.cut == 1 and res.empty == 1 and res.kept == {"train": 2, "oracle": 1}
    with h5py.File(tmp_path / "s.h5", "r") as f:
        blocks = f["blocks"][()]
    assert int((blocks == a).sum()) == 5 and not (blocks == b).any()


def test_the_import_streams_trial_by_trial(tmp_path: Path) -> None:
    m = write_mouse(tmp_path / "mouse", ["train"] * 12, n=300, h=24, w=32, t=60, min_len=50)
    source = sum(x.nbytes for d in (m.videos, m.responses) for x in d.values())
    one = max(m.videos[i].nbytes + m.responses[i].nbytes for i in m.ids)
    del m
    tracemalloc.start()
    try:
        import_sensorium(tmp_path / "mouse", tmp_path / "s.h5")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < min(6 * one, source / 2), (peak, one, source)


# ----------------------------------------------------------------------------- bad layouts


def _drop_folder(m: Mouse) -> None:
    shutil.rmtree(m.folder / "data" / "pupil_center")


def _short_responses(m: Mouse) -> None:
    tid = m.ids[2]
    np.save(m.folder / "data" / "responses" / f"{tid}.npy", m.responses[tid][:, :-3])


def _fewer_neurons(m: Mouse) -> None:
    tid = m.ids[1]
    np.save(m.folder / "data" / "responses" / f"{tid}.npy", m.responses[tid][:-1])


def _no_trial(m: Mouse) -> None:
    for key in ("videos", "responses", "behavior", "pupil_center"):
        for p in (m.folder / "data" / key).glob("*.npy"):
            p.unlink()


def _missing_file(m: Mouse) -> None:
    (m.folder / "data" / "behavior" / f"{m.ids[3]}.npy").unlink()


def _no_tiers(m: Mouse) -> None:
    (m.folder / "meta" / "trials" / "tiers.npy").unlink()


def _short_tiers(m: Mouse) -> None:
    np.save(m.folder / "meta" / "trials" / "tiers.npy", np.array(["train"] * 2))


def _unknown_tier(m: Mouse) -> None:
    tiers = np.load(m.folder / "meta" / "trials" / "tiers.npy")
    tiers[m.ids[0]] = "validation"
    np.save(m.folder / "meta" / "trials" / "tiers.npy", tiers)


def _text_name(m: Mouse) -> None:
    np.save(m.folder / "data" / "responses" / "notes.npy", np.zeros(3))


def _all_withheld(m: Mouse) -> None:
    for tid in m.ids:
        np.save(m.folder / "data" / "responses" / f"{tid}.npy", np.full((5, 40), np.nan))


def _wrong_unit_ids(m: Mouse) -> None:
    np.save(m.folder / "meta" / "neurons" / "unit_ids.npy", np.arange(4))


def _not_an_array(m: Mouse) -> None:
    (m.folder / "data" / "videos" / f"{m.ids[0]}.npy").write_text("hello")


BAD: list[tuple[str, Callable[[Mouse], None], str]] = [
    ("missing folder", _drop_folder, r"no data/pupil_center folder; pass one mouse's folder"),
    ("mismatched T", _short_responses, r"has 40 frames but data/responses/\d+.npy has 37"),
    ("N differs", _fewer_neurons, r"has 4 neurons but trial \d+ has 5; every trial"),
    ("no trial", _no_trial, r"data/responses: no trial \(<id>.npy\) at all"),
    ("missing file", _missing_file, r"data/behavior has no \d+.npy but data/responses has"),
    ("no tiers", _no_tiers, r"tiers.npy: missing; the split comes from each trial's tier"),
    ("short tiers", _short_tiers, r"tiers.npy: has 2 entries but trial \d+ exists"),
    ("unknown tier", _unknown_tier, r"has the tier 'validation', not one of train, oracle"),
    ("not an id", _text_name, r"notes.npy: not named by an integer trial id"),
    ("all withheld", _all_withheld, r"no trial has responses \(withheld, all NaN: final_test"),
    ("unit ids", _wrong_unit_ids, r"unit_ids.npy: has 4 entries but the responses have 5"),
    ("not an array", _not_an_array, r"videos/\d+.npy: not a readable .npy array"),
]


@pytest.mark.parametrize(("change", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_layouts_are_one_line_and_leave_nothing(
    mouse: Mouse, tmp_path: Path, change: Callable[[Mouse], None], message: str
) -> None:
    change(mouse)
    out = tmp_path / "out" / "s.h5"
    with pytest.raises(DataError, match=message) as err:
        import_sensorium(mouse.folder, out)
    assert "\n" not in str(err.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_parent_folder_or_a_zip_says_what_to_pass(mouse: Mouse, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds mouse folders \(dynamic1-2-3-Video-abc\)"):
        import_sensorium(tmp_path, tmp_path / "s.h5")
    (tmp_path / "m.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="a zip file; unzip it"):
        import_sensorium(tmp_path / "m.zip", tmp_path / "s.h5")
    with pytest.raises(DataError, match=r"--frame-rate 0\.0: give a positive number"):
        import_sensorium(mouse.folder, tmp_path / "s.h5", frame_rate=0.0)


def test_a_failed_import_keeps_the_previous_file(mouse: Mouse, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    import_sensorium(mouse.folder, out)
    before = out.read_bytes()
    _short_responses(mouse)
    with pytest.raises(DataError):
        import_sensorium(mouse.folder, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [mouse.folder.name, "s.h5"]


# ----------------------------------------------------------------------------- the CLI


def test_cli_import_then_inspect(mouse: Mouse, tmp_path: Path) -> None:
    out = tmp_path / "sessions" / "m1.h5"
    res = runner.invoke(
        app, ["data", "import-sensorium", str(mouse.folder), "--out", str(out)], env=WIDE
    )
    assert res.exit_code == 0, res.output
    assert "9, one block each: train 5, oracle 2, live_test_main 1, live_test_bonus 1" in res.output
    assert "3 withheld (responses all NaN): final_test_main 2, final_test_bonus 1" in res.output
    assert "pupil_dilation, running_speed, pupil_center_x, pupil_center_y" in res.output
    res = runner.invoke(app, ["data", "inspect", str(out), "--num-lags", "6"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "calcium" in res.output and "1x8x12 uint8" in res.output and "none" in res.output
    _fewer_neurons(mouse)
    res = runner.invoke(app, ["data", "import-sensorium", str(mouse.folder), "--out", str(out)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "has 4 neurons but trial" in res.output
    into = ["data", "import-sensorium", str(mouse.folder), "--out", str(mouse.folder)]
    res = runner.invoke(app, into)
    assert res.exit_code == 2 and "is the mouse folder" in res.output
