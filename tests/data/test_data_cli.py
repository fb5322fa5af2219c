"""`vivit-hpo data synth` and `vivit-hpo data inspect`, through typer and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from data_helpers import session_arrays, write_session
from typer.testing import CliRunner

from vivit_hpo.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_synth_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    res = runner.invoke(
        app,
        [
            *("data", "synth", str(out), "--sessions", "2", "--neurons", "6"),
            *("--frames", "1500", "--size", "16", "12", "--seed", "4", "--num-lags", "10"),
        ],
        env=WIDE,
    )
    assert res.exit_code == 0, res.output
    oracle = json.loads((out / "oracle.json").read_text())
    assert set(oracle) == {"sim00", "sim01"}
    for name, per_split in oracle.items():
        assert name in res.output
        assert f"{per_split['val']:.3f}" in res.output  # the table shows the oracle
    assert "num_lags=10" in res.output
    assert sorted(p.name for p in (out / "truth").iterdir()) == ["sim00.h5", "sim01.h5"]

    res = runner.invoke(app, ["data", "inspect", str(out), "--num-lags", "10"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "1x16x12 uint8" in res.output and "(file)" in res.output
    assert res.output.count("none") == 2  # no problems in either file
    assert "kind" not in res.output and "spikes" not in res.output  # only where one is not


def test_inspect_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    good = write_session(tmp_path / "good.h5", t=200, block_len=50)
    arrays = session_arrays(t=200)
    arrays["robs"] = arrays["robs"].astype(np.int16)
    arrays["robs"][3, 0] = -2
    bad = write_session(tmp_path / "bad.h5", arrays, frame_rate=None)
    missing = tmp_path / "missing.h5"
    res = runner.invoke(
        app, ["data", "inspect", str(good), str(bad), str(missing), "--num-lags", "8"], env=WIDE
    )
    assert res.exit_code == 2
    assert f"{bad}: frame_rate: missing file attribute" in res.output
    assert f"{bad}: robs: 1 counts are negative" in res.output
    assert f"{missing}: file: does not exist" in res.output
    assert "3 problem(s) in 2 file(s)" in res.output


def test_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "inspect", str(tmp_path)])  # a folder with no *.h5
    assert res.exit_code == 2, res.exception
    assert "folder has no *.h5 session files" in res.output
    res = runner.invoke(app, ["data", "synth", str(tmp_path), "--size", "2", "2"])
    assert res.exit_code == 2 and "at least 4x4" in res.output


def test_subprocess_synth_and_inspect(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = tmp_path / "sim"
    synth = subprocess.run(
        [
            *(sys.executable, "-m", "vivit_hpo", "data", "synth", str(out)),
            *("--neurons", "4", "--frames", "800", "--size", "12", "12"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert synth.returncode == 0, synth.stderr
    assert (out / "sim00.h5").is_file() and "wrote 1 session(s)" in synth.stdout
    (out / "junk.h5").write_text("not hdf5")
    inspect = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "data", "inspect", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert inspect.returncode == 2
    assert f"{out / 'junk.h5'}: file: not an HDF5 file" in inspect.stderr
    assert "sim00" in inspect.stdout
