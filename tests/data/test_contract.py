"""Validation of session files: every way a file can break the contract gives its one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from data_helpers import session_arrays, write_session

import vivit_hpo.data.contract as contract
from vivit_hpo.config import DataConfig
from vivit_hpo.data import expand_paths, load_sessions, validate_file
from vivit_hpo.errors import DataError

T = 120

Arrays = dict[str, Any]


def _drop(key: str) -> Callable[[Arrays, dict[str, Any]], None]:
    def f(a: Arrays, attrs: dict[str, Any]) -> None:
        del a[key]

    return f


def _set(key: str, value: Callable[[Arrays], Any]) -> Callable[[Arrays, dict[str, Any]], None]:
    def f(a: Arrays, attrs: dict[str, Any]) -> None:
        a[key] = value(a)

    return f


def _attr(key: str, value: Any) -> Callable[[Arrays, dict[str, Any]], None]:
    def f(a: Arrays, attrs: dict[str, Any]) -> None:
        attrs[key] = value

    return f


def _with_nan(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    x.flat[7] = np.nan
    return x


def _neg(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int16)
    x[5, 1] = -1
    return x


# (id, change, dataset named in the line, fragment of the line)
BROKEN: list[tuple[str, Callable[[Arrays, dict[str, Any]], None], str, str]] = [
    ("no-stim", _drop("stim"), "stim", "missing"),
    ("no-robs", _drop("robs"), "robs", "missing"),
    ("no-frame-rate", _attr("frame_rate", None), "frame_rate", "missing file attribute"),
    ("bad-frame-rate", _attr("frame_rate", -5.0), "frame_rate", "not a positive number"),
    ("stim-2d", _set("stim", lambda a: a["stim"][:, 0]), "stim", "(2 dims)"),
    ("stim-int16", _set("stim", lambda a: a["stim"].astype(np.int16)), "stim", "dtype int16"),
    ("stim-nan", _set("stim", lambda a: _with_nan(a["stim"])), "stim", "1 values are NaN"),
    (
        "robs-short",
        _set("robs", lambda a: a["robs"][:-1]),
        "robs",
        f"{T - 1} bins but stim has {T}",
    ),
    ("robs-1d", _set("robs", lambda a: a["robs"][:, 0]), "robs", "(T, N)"),
    ("robs-negative", _set("robs", lambda a: _neg(a["robs"])), "robs", "1 counts are negative"),
    ("robs-nan", _set("robs", lambda a: _with_nan(a["robs"])), "robs", "1 counts are NaN"),
    ("robs-text", _set("robs", lambda a: np.full((T, 2), b"x")), "robs", "not numeric"),
    ("dfs-shape", _set("dfs", lambda a: a["dfs"][:, :2]), "dfs", "not (T, N) = (120, 3)"),
    ("dfs-not-01", _set("dfs", lambda a: a["dfs"] * 2), "dfs", "not 0 or 1"),
    ("behavior-short", _set("behavior", lambda a: a["behavior"][:-3]), "behavior", f"{T - 3} bins"),
    ("behavior-1d", _set("behavior", lambda a: a["behavior"][:, 0]), "behavior", "(T, K)"),
    ("behavior-nan", _set("behavior", lambda a: _with_nan(a["behavior"])), "behavior", "NaN"),
    ("behavior-names", _attr("behavior_names", ["a", "b", "c"]), "behavior_names", "3 names"),
    ("name-slash", _attr("name", "mouse1/day2"), "name", "'mouse1/day2' contains '/'"),
    ("response-kind", _attr("response_kind", "dff"), "response_kind", "'dff', not one of"),
    ("blocks-shape", _set("blocks", lambda a: a["blocks"][:-1]), "blocks", "shape"),
    (
        "blocks-float",
        _set("blocks", lambda a: a["blocks"].astype(float)),
        "blocks",
        "not an integer",
    ),
    ("split-shape", _set("split", lambda a: np.zeros((T, 2), np.uint8)), "split", "shape"),
    (
        "split-values",
        _set("split", lambda a: np.r_[np.zeros(T - 1), 3].astype(np.uint8)),
        "split",
        "not 0, 1 or 2",
    ),
]


@pytest.mark.parametrize(
    ("change", "dataset", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_each_broken_file_gives_one_line(
    tmp_path: Path, change: Callable[[Arrays, dict[str, Any]], None], dataset: str, fragment: str
) -> None:
    arrays = session_arrays(t=T)
    attrs: dict[str, Any] = {"frame_rate": 60.0}
    change(arrays, attrs)
    path = tmp_path / "s.h5"
    write_session(path, arrays, frame_rate=attrs.pop("frame_rate"), attrs=attrs)
    problems = validate_file(path)
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{path}: {dataset}: "), line
    assert fragment in line
    assert "; " in line and "\n" not in line  # what is wrong; how to fix, on one line


def test_valid_files_pass(tmp_path: Path) -> None:
    assert validate_file(write_session(tmp_path / "a.h5")) == []
    assert validate_file(write_session(tmp_path / "b.h5", c=3, k=None, block_len=None)) == []
    floats = write_session(tmp_path / "c.h5", stim_dtype=np.float16)
    assert validate_file(floats, min_size=(8, 8), num_lags=30) == []


def test_not_hdf5_missing_and_group(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    assert validate_file(text) == [
        f"{text}: file: not an HDF5 file; write sessions with h5py as described in data-contract.md"
    ]
    gone = tmp_path / "gone.h5"
    (line,) = validate_file(gone)
    assert line.startswith(f"{gone}: file: does not exist; ")
    grouped = tmp_path / "g.h5"
    arrays = session_arrays()
    del arrays["stim"]
    write_session(grouped, arrays)
    with h5py.File(grouped, "a") as f:
        f.create_group("stim")
    (line,) = validate_file(grouped)
    assert line.startswith(f"{grouped}: stim: is a group")


def test_frames_smaller_than_a_tubelet(tmp_path: Path) -> None:
    path = write_session(tmp_path / "s.h5", h=8, w=6)
    assert validate_file(path, min_size=(8, 6)) == []
    (line,) = validate_file(path, min_size=(4, 8))
    assert line.startswith(f"{path}: stim: frames of 8x6 are smaller than one tubelet (4x8); ")


def test_blocks_shorter_than_num_lags(tmp_path: Path) -> None:
    path = write_session(tmp_path / "s.h5", block_len=30)
    assert validate_file(path, num_lags=30) == []
    (line,) = validate_file(path, num_lags=31)
    assert line.startswith(f"{path}: blocks: the longest block has 30 bins, fewer than num_lags=31")


def test_values_are_checked_slab_by_slab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaNs in several chunks of a chunked dataset are all counted, reading a slab at a time."""
    arrays = session_arrays(t=400, stim_dtype=np.float32)
    arrays["stim"][[3, 150, 399], 0, 0] = np.nan
    path = tmp_path / "s.h5"
    write_session(path, arrays)
    with h5py.File(path, "a") as f:
        del f["stim"]
        f.create_dataset("stim", data=arrays["stim"], chunks=(16, 8, 8))
    seen: list[int] = []
    real = contract._slabs

    def spy(ds: h5py.Dataset) -> Any:
        for x in real(ds):
            if ds.name == "/stim":
                seen.append(x.shape[0])
            yield x

    monkeypatch.setattr(contract, "_SLAB_BYTES", 8 * 8 * 4 * 40)  # 40 frames -> 32 (2 chunks)
    monkeypatch.setattr(contract, "_slabs", spy)
    (line,) = validate_file(path)
    assert "stim: 3 values are NaN or Inf" in line
    assert seen == [32] * 12 + [16]  # 400 frames, never more than 2 chunks at once


def test_several_problems_all_listed(tmp_path: Path) -> None:
    arrays = session_arrays()
    arrays["robs"] = _neg(arrays["robs"])
    arrays["split"] = np.full(T, 7, np.uint8)
    path = write_session(tmp_path / "s.h5", arrays, frame_rate=None)
    problems = validate_file(path)
    assert [p.split(": ")[1] for p in problems] == ["frame_rate", "robs", "split"]


def test_load_sessions_raises_first_problem_and_count(tmp_path: Path) -> None:
    good = write_session(tmp_path / "a.h5")
    arrays = session_arrays()
    del arrays["robs"]
    bad = write_session(tmp_path / "b.h5", arrays, frame_rate=None)
    with pytest.raises(DataError) as err:
        load_sessions([good, bad], DataConfig(num_lags=4))
    msg = str(err.value)
    assert msg.startswith(f"{bad}: frame_rate: missing file attribute")
    assert msg.endswith(
        f" (session 'b'; and 1 more problem in this file; run `vivit-hpo data inspect {good} "
        f"{bad}` for all)"
    )
    # A single problem has no tail but the session's name.
    write_session(tmp_path / "b.h5", frame_rate=None)
    with pytest.raises(DataError) as err:
        load_sessions([good, bad], DataConfig(num_lags=4))
    assert str(err.value).endswith(
        "frame_rate: missing file attribute; set f.attrs['frame_rate'] = <bins per second> "
        "(e.g. 120.0) (session 'b')"
    )
    assert "run `vivit-hpo data inspect" not in str(err.value)


def test_expand_paths(tmp_path: Path) -> None:
    b = write_session(tmp_path / "d" / "b.h5")
    a = write_session(tmp_path / "d" / "a.h5")
    write_session(tmp_path / "d" / "sub" / "c.h5")  # not recursive
    (tmp_path / "d" / "notes.txt").write_text("x")
    other = write_session(tmp_path / "x.hdf5")
    assert expand_paths([tmp_path / "d", str(other)]) == [a, b, other]
    with pytest.raises(DataError, match="no such file or folder"):
        expand_paths([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: folder has no \*\.h5 session files"):
        expand_paths([tmp_path / "empty"])
    with pytest.raises(DataError, match="no session files given"):
        expand_paths([])


def test_a_session_name_with_a_slash_is_refused_before_training(tmp_path: Path) -> None:
    # The name is the file name of evaluate's <session>.npz: 'a/b' would be a folder there.
    path = write_session(tmp_path / "s.h5", attrs={"name": "mouse1/day2"})
    with pytest.raises(DataError, match=r"contains '/'; set a session name without it") as got:
        load_sessions([path], DataConfig(num_lags=4))
    assert "\n" not in str(got.value)


def test_duplicate_session_names_refused(tmp_path: Path) -> None:
    a = write_session(tmp_path / "a.h5", attrs={"name": "same"})
    b = write_session(tmp_path / "b.h5", attrs={"name": "same"})
    with pytest.raises(DataError, match="session name 'same' is used by 2 files"):
        load_sessions([a, b], DataConfig(num_lags=4))
