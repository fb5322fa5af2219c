"""The simulator writes valid sessions whose oracle BPS recomputes from the truth files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import vivit_hpo.data.simulate as simulate
from vivit_hpo.config import DataConfig
from vivit_hpo.data import (
    compute_oracle,
    load_sessions,
    oracle_bps,
    sample_mask,
    synthesize,
    validate_file,
)
from vivit_hpo.errors import DataError
from vivit_hpo.metrics import bits_per_spike


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> simulate.SynthResult:
    out = tmp_path_factory.mktemp("sim")
    return synthesize(out, sessions=2, neurons=[8, 5], frames=2000, size=(16, 16), seed=3)


def test_files_keep_the_contract_and_load(sim: simulate.SynthResult) -> None:
    assert [p.name for p in sim.files] == ["sim00.h5", "sim01.h5"]
    for path in sim.files:
        assert validate_file(path, min_size=(16, 16), num_lags=24) == []
        with h5py.File(path, "r") as f:
            assert f["stim"].dtype == np.uint8 and f["stim"].shape == (2000, 16, 16)
            assert f["behavior"].shape == (2000, 4)
            assert list(f.attrs["behavior_names"]) == list(simulate.BEHAVIOR_NAMES)
            assert f.attrs["frame_rate"] == 60.0
            assert set(np.unique(f["split"][()])) == {0, 1, 2}
    data = load_sessions([sim.out_dir], DataConfig())
    assert [m.num_units for m in data.metas] == [8, 5]
    assert all(m.num_behavior == 4 for m in data.metas)
    # Realistic rates: every unit between ~1 and ~30 spikes/s.
    for m in data.metas:
        hz = np.array(m.mean_rates) * m.frame_rate
        assert (hz > 1).all() and (hz < 30).all(), hz


def test_oracle_json_recomputes_from_the_truth(sim: simulate.SynthResult) -> None:
    stored = json.loads((sim.out_dir / "oracle.json").read_text())
    assert stored == sim.oracle and set(stored) == {"sim00", "sim01"}
    for path, truth in zip(sim.files, sim.truth_files, strict=True):
        name = path.stem
        assert compute_oracle(path, truth) == pytest.approx(stored[name], abs=1e-12)
        # And independently of the loader: the pure metric on the sample bins of each split.
        with h5py.File(path, "r") as f, h5py.File(truth, "r") as g:
            robs, dfs = f["robs"][()], f["dfs"][()]
            split, blocks = f["split"][()], f["blocks"][()]
            rates = g["rates"][()]
            assert g.attrs["oracle_num_lags"] == 24
            assert g["units/rf_center"].shape == (robs.shape[1], 2)
        valid = sample_mask(blocks, split, 24)
        for code, part in enumerate(("train", "val", "test")):
            bins = valid & (split == code)
            per_unit = bits_per_spike(rates[bins], robs[bins], dfs[bins])
            assert stored[name][part] == pytest.approx(np.nanmean(per_unit), abs=1e-9)
        # The truth carries real signal: a model has something to learn.
        assert 0.2 < stored[name]["val"] < 1.5


def test_oracle_for_another_num_lags_is_recomputed(sim: simulate.SynthResult) -> None:
    assert oracle_bps(sim.out_dir) == sim.oracle
    assert oracle_bps(sim.files[0]) == sim.oracle  # a file: the folder it lies in
    assert oracle_bps(sim.out_dir, DataConfig()) == sim.oracle  # same num_lags: the file
    other = oracle_bps(sim.out_dir, DataConfig(num_lags=5))
    assert other is not None and other != sim.oracle
    want = compute_oracle(sim.files[1], sim.truth_files[1], DataConfig(num_lags=5))
    assert other["sim01"] == pytest.approx(want)
    assert oracle_bps(sim.truth_files[0].parent.parent / "truth") is None


def test_the_oracle_of_a_split_is_the_mean_over_sessions(
    sim: simulate.SynthResult, tmp_path: Path
) -> None:
    want = sum(s["test"] for s in sim.oracle.values()) / len(sim.oracle)
    assert simulate.oracle_split_mean(sim.files) == pytest.approx(want)
    assert simulate.oracle_split_mean([sim.out_dir], "val") == pytest.approx(
        sum(s["val"] for s in sim.oracle.values()) / len(sim.oracle)
    )
    # A folder that is not simulated has no oracle, and neither has a mix of the two.
    assert simulate.oracle_split_mean([tmp_path]) is None
    assert simulate.oracle_split_mean([sim.out_dir, tmp_path]) is None


def test_same_seed_same_data(tmp_path: Path) -> None:
    a = simulate.simulate_session("x", neurons=4, frames=600, size=(12, 12), frame_rate=60, seed=9)
    b = simulate.simulate_session("x", neurons=4, frames=600, size=(12, 12), frame_rate=60, seed=9)
    c = simulate.simulate_session("x", neurons=4, frames=600, size=(12, 12), frame_rate=60, seed=10)
    np.testing.assert_array_equal(a.stim, b.stim)
    np.testing.assert_array_equal(a.robs, b.robs)
    assert not np.array_equal(a.robs, c.robs)


def test_the_population_is_v1_like() -> None:
    s = simulate.simulate_session(
        "v1", neurons=16, frames=6000, size=(24, 24), frame_rate=60.0, seed=1
    )
    # Fixations: most consecutive frames are identical or shifted by a pixel; saccades are rare.
    diff = np.abs(np.diff(s.stim.astype(np.int16), axis=0)).mean(axis=(1, 2))
    assert np.median(diff) < np.percentile(diff, 99) / 3
    # Running raises the population rate (positive gains on average).
    pop = s.rates.mean(1)
    assert np.corrcoef(s.behavior[:, 0], pop)[0, 1] > 0.2
    # Both cell types are present and each unit is driven by the stimulus (rates vary a lot).
    assert set(np.unique(s.units["cell_type"])) == {0, 1}
    cv = s.rates.std(0) / s.rates.mean(0)
    assert (cv > 0.3).all()


def test_an_error_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = simulate._write_truth

    def failing(path: Path, *args: object, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(simulate, "_write_truth", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(out, sessions=2, neurons=3, frames=300, size=(8, 8))
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert leftovers == []


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="give one neurons per session"):
        synthesize(tmp_path, sessions=2, neurons=[3], frames=100, size=(8, 8))
    with pytest.raises(DataError, match="at least 4x4"):
        synthesize(tmp_path, frames=100, size=(2, 8))
    with pytest.raises(DataError, match="frame_rate"):
        synthesize(tmp_path, frames=100, size=(8, 8), frame_rate=0)


def test_sessions_of_different_shapes(tmp_path: Path) -> None:
    res = synthesize(
        tmp_path,
        sessions=3,
        neurons=[4, 6, 5],
        frames=[600, 900, 700],
        size=[(8, 8), (10, 6), (6, 12)],
        behavior=[4, 0, 2],
        seed=2,
    )
    shapes = []
    for path in res.files:
        with h5py.File(path, "r") as f:
            beh = f["behavior"].shape[1] if "behavior" in f else 0
            shapes.append((*f["stim"].shape, f["robs"].shape[1], beh))
            assert validate_file(path) == []
    assert shapes == [(600, 8, 8, 4, 4), (900, 10, 6, 6, 0), (700, 6, 12, 5, 2)]
    with pytest.raises(DataError, match="give one size per session"):
        synthesize(tmp_path, sessions=2, size=[(8, 8)], frames=100)
