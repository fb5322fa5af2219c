"""load_sessions across many files: every bad file is found, and one run keeps one frame rate."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from data_helpers import write_session
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import DataConfig
from vivit_hpo.data import load_sessions
from vivit_hpo.data.loader import check_frame_rates
from vivit_hpo.errors import DataError

runner = CliRunner()


def _twenty(folder: Path) -> list[Path]:
    """20 small valid sessions; files 06 and 13 then broken in different ways."""
    files = [
        write_session(folder / f"s{i:02d}.h5", t=60, n=2, h=4, w=4, k=None, block_len=20, seed=i)
        for i in range(20)
    ]
    with h5py.File(files[6], "a") as f:  # two problems
        del f.attrs["frame_rate"]
        f["robs"][0, 0] = 0
        del f["robs"]
    with h5py.File(files[13], "a") as f:  # one problem, and its own session name
        f.attrs["name"] = "thirteen"
        f["dfs"][1, 1] = 3
    return files


def test_one_bad_file_does_not_stop_the_others_being_checked(tmp_path: Path) -> None:
    files = _twenty(tmp_path)
    with pytest.raises(DataError) as err:
        load_sessions([tmp_path], DataConfig(num_lags=4))
    assert str(err.value) == (
        f"{files[6]}: frame_rate: missing file attribute; set f.attrs['frame_rate'] = <bins per "
        "second> (e.g. 120.0) (session 's06'; and 1 more problem in this file; 1 other of 20 "
        f"files is bad too; run `vivit-hpo data inspect {tmp_path}` for all)"
    )
    with pytest.raises(DataError, match=r"\(session 'thirteen'\)$"):
        load_sessions(files[7:], DataConfig(num_lags=4))

    res = runner.invoke(app, ["data", "inspect", str(tmp_path), "--num-lags", "4"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.startswith(str(tmp_path))]
    assert lines == [
        f"{files[6]}: frame_rate: missing file attribute; set f.attrs['frame_rate'] = <bins per "
        "second> (e.g. 120.0)",
        f"{files[6]}: robs: missing; write spike counts as dataset `robs` of shape (T, N)",
        f"{files[13]}: dfs: 1 values are not 0 or 1; store 1 where a count is valid and 0 "
        "where it is not",
    ]
    assert "3 problem(s) in 2 file(s)" in res.output
    assert res.output.count("none") == 18  # the 18 good files are described too


def test_sessions_of_one_run_share_a_frame_rate(tmp_path: Path) -> None:
    a = write_session(tmp_path / "a.h5", frame_rate=60.0)
    b = write_session(tmp_path / "b.h5", frame_rate=59.7)  # within 1%: irregular frame times
    c = write_session(tmp_path / "c.h5", frame_rate=30.0, attrs={"name": "slow"})
    d = write_session(tmp_path / "d.h5", frame_rate=120.0)
    assert len(load_sessions([a, b], DataConfig(num_lags=4))) == 2
    with pytest.raises(DataError) as err:
        load_sessions([a, b, c, d], DataConfig(num_lags=4))
    assert str(err.value) == (
        f"{c}: frame_rate: session 'slow' is 30 Hz but {a} is 60 Hz (and 1 more); a run needs "
        "one frame rate (num_lags counts bins): re-import the recordings at one rate "
        "(`vivit-hpo data import-nwb NWB_FILE --out SESSION.h5 --frame-rate 60`), rewrite the "
        "files at one rate, or train them in separate runs"
    )


def test_check_frame_rates_tolerance() -> None:
    check_frame_rates({})
    check_frame_rates({Path("a.h5"): 100.0, Path("b.h5"): 100.99})
    with pytest.raises(DataError, match=r"is 101\.1 Hz but a\.h5 is 100 Hz;"):
        check_frame_rates({Path("a.h5"): 100.0, Path("b.h5"): 101.1})
    check_frame_rates({Path("a.h5"): 100.0, Path("b.h5"): 101.1}, tolerance=0.02)
