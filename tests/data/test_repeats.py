"""Seeded splits that hold out whole repeats (``data.split_by``), on sessions that import-nwb
wrote from Allen-layout NWB files written with pynwb (``allen_nwb``)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from allen_nwb import write_allen
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import DataConfig
from vivit_hpo.data import import_nwb, inspect_file, load_sessions
from vivit_hpo.errors import DataError

ORDERED = "natural_movie_one_presentations"
SHUFFLED = "natural_movie_one_shuffled_presentations"


@pytest.fixture(scope="module")
def allen_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session of 5 repeats (12, 12, 12, 13, 13 bins) in 4 blocks, as import-nwb writes it."""
    tmp = tmp_path_factory.mktemp("allen")
    s = write_allen(tmp / "715093703.nwb")
    out = tmp / "m1.h5"
    import_nwb(s.path, out, presentations=[ORDERED, SHUFFLED])
    return out


def _labels(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    data = load_sessions([path], cfg)
    with h5py.File(path) as f:
        repeat = f["repeat"][()]
    return data.sessions[0].split, repeat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_whole_repeats_are_held_out(allen_session: Path, seed: int) -> None:
    cfg = DataConfig(num_lags=2, split_seed=seed)
    split, repeat = _labels(allen_session, cfg)
    per_repeat = {int(r): set(split[repeat == r].tolist()) for r in np.unique(repeat)}
    assert all(len(labels) == 1 for labels in per_repeat.values()), per_repeat
    held = {r for r, labels in per_repeat.items() if labels != {0}}
    # 5 repeats: one for test, one for validation, three trained on.
    assert sorted(split[repeat == r][0] for r in held) == [1, 2]
    assert not np.isin(
        np.flatnonzero(split == 0), np.flatnonzero(np.isin(repeat, list(held)))
    ).any()
    data = load_sessions([allen_session], cfg)
    for name in ("train", "val", "test"):
        bins = data.sample_bins(data.names[0], name)
        assert bins.size and len(set(repeat[bins].tolist())) == (3 if name == "train" else 1)
    assert inspect_file(allen_session, cfg).split_source == "seeded by repeat"
    # The same seed, the same repeats.
    np.testing.assert_array_equal(_labels(allen_session, cfg)[0], split)


def test_chunks_on_request_and_repeats_refused_without_them(
    allen_session: Path, tmp_path: Path
) -> None:
    split, repeat = _labels(allen_session, DataConfig(num_lags=2, split_by="chunks"))
    assert inspect_file(allen_session, DataConfig(num_lags=2, split_by="chunks")).split_source == (
        "seeded"
    )
    # 62 bins in 4 blocks: chunks of 6 bins, which cut repeats across splits.
    assert any(len(set(split[repeat == r].tolist())) > 1 for r in np.unique(repeat))

    bare = tmp_path / "bare.h5"
    with h5py.File(allen_session) as src, h5py.File(bare, "w") as dst:
        for key in ("stim", "robs", "blocks"):
            src.copy(key, dst)
        dst.attrs["frame_rate"] = src.attrs["frame_rate"]
    with pytest.raises(DataError) as e:
        load_sessions([bare], DataConfig(num_lags=2, split_by="repeats"))
    assert str(e.value) == (
        f"{bare}: repeat: data.split_by=repeats but the file has no `repeat` dataset; import it "
        "with `data import-nwb --presentations`, or set data.split_by=chunks"
    )
    # auto falls back to chunks.
    assert inspect_file(bare, DataConfig(num_lags=2)).split_source == "seeded"


def test_inspect_names_a_repeat_split(allen_session: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "inspect", str(allen_session), "--num-lags", "2"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "(seeded by repeat)" in result.output
