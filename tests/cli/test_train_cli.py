from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from vivit_hpo.cli import app

runner = CliRunner()

TINY_YAML = """
model:
  core: {embed_dim: 16, num_heads: 2, num_spatial_blocks: 1, num_temporal_blocks: 1,
         kernel_size: [2, 4, 4], stride: [2, 4, 4], num_registers: 1}
  modulator: {hidden_dim: 4}
data: {num_lags: 6}
train: {epochs: 2, batch_size: 16, steps_per_epoch: 5, max_val_batches: 3}
"""


def write_foreign_session(path: Path, seed: int = 0) -> None:
    """A session as another lab would write it: no split, no dfs, no behaviour, float stim."""
    rng = np.random.default_rng(seed)
    T, N = 900, 5
    stim = rng.random((T, 12, 14), dtype=np.float32)
    drive = stim[:, 4:8, 4:8].mean(axis=(1, 2))
    robs = rng.poisson(np.outer(0.2 + 2 * drive, np.ones(N))).astype(np.int32)
    with h5py.File(path, "w") as f:
        f["stim"] = stim
        f["robs"] = robs
        f["blocks"] = np.repeat(np.arange(9), 100)
        f.attrs["frame_rate"] = 30.0


def test_train_then_evaluate_writes_predictions(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(sim_dir),
            "--model",
            str(cfg),
            "--out",
            str(run),
            "--device",
            "cpu",
            "--set",
            "train.lr=2e-3",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert "val BPS" in result.output

    preds = tmp_path / "preds"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(sim_dir),
            "--split",
            "test",
            "--out",
            str(preds),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((preds / "summary.json").read_text())
    assert set(summary["bps_per_session"]) == {p.stem for p in sim_dir.glob("*.h5")}
    for name in summary["bps_per_session"]:
        npz = np.load(preds / f"{name}.npz")
        assert npz["rates"].ndim == 2 and npz["rates"].shape[0] == npz["bins"].shape[0]
        assert (npz["rates"] > 0).all()
        assert npz["bps"].shape == (npz["rates"].shape[1],)
        assert np.all(np.diff(npz["bins"]) > 0)  # each test bin once, in order


def test_evaluate_a_file_written_elsewhere(tmp_path: Path) -> None:
    session = tmp_path / "lab.h5"
    write_foreign_session(session)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(session),
            "--model",
            str(cfg),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(session),
            "--split",
            "val",
            "--out",
            str(tmp_path / "p"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["bps_per_session"].keys() == {
        "lab"
    }


def test_bad_config_key_is_one_line_and_exit_2(sim_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--data", str(sim_dir), "--out", str(run), "--set", "model.core.depth=3"],
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: config: model.core.depth: unknown key; check its spelling against the "
        "documented keys"
    ]
    assert not run.exists()


def test_console_script_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vivit_hpo",
            "evaluate",
            str(tmp_path / "nope"),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "p"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
