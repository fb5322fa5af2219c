from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.config import load_run_config
from vivit_hpo.data import load_sessions
from vivit_hpo.metrics import GAIN_LABEL

runner = CliRunner()

TINY_YAML = """
model:
  core: {embed_dim: 16, num_heads: 2, num_spatial_blocks: 1, num_temporal_blocks: 1,
         kernel_size: [2, 4, 4], stride: [2, 4, 4], num_registers: 1}
  modulator: {hidden_dim: 4}
data: {num_lags: 6, max_val_bins: 48}
train: {epochs: 2, batch_size: 16, steps_per_epoch: 5}
"""


def write_foreign_session(path: Path, seed: int = 0, *, calcium: bool = False) -> None:
    """A session as another lab would write it: no split, no dfs, no behaviour, float stim;
    ``calcium``: float responses (deconvolved traces) with ``response_kind`` calcium."""
    rng = np.random.default_rng(seed)
    T, N = 900, 5
    stim = rng.random((T, 12, 14), dtype=np.float32)
    drive = stim[:, 4:8, 4:8].mean(axis=(1, 2))
    rate = np.outer(0.2 + 2 * drive, np.ones(N))
    if calcium:
        robs = rng.gamma(2.0, rate / 2.0).astype(np.float32)
    else:
        robs = rng.poisson(rate).astype(np.int32)
    with h5py.File(path, "w") as f:
        f["stim"] = stim
        f["robs"] = robs
        f["blocks"] = np.repeat(np.arange(9), 100)
        f.attrs["frame_rate"] = 30.0
        if calcium:
            f.attrs["response_kind"] = "calcium"


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
    # Each session's stimulus statistics travel with the run: evaluate and predict standardise
    # the frames with the numbers the model was trained with.
    saved = {m["name"]: m for m in json.loads((run / "sessions.json").read_text())}
    loaded = load_sessions([sim_dir], load_run_config(None, ["data.num_lags=6"]).data)
    assert set(saved) == set(loaded.names)
    for meta in loaded.metas:
        assert saved[meta.name]["stim_mean"] == meta.stim_mean != 0.0
        assert saved[meta.name]["stim_std"] == meta.stim_std != 1.0

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


@pytest.mark.parametrize("kind", ["spikes", "calcium"])
def test_calcium_runs_lead_with_r_and_never_say_bits_per_spike(tmp_path: Path, kind: str) -> None:
    session = tmp_path / "lab.h5"
    write_foreign_session(session, calcium=kind == "calcium")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    run, preds = tmp_path / "run", tmp_path / "p"
    wide = {"COLUMNS": "250"}
    cpu = ("--device", "cpu")
    trained = runner.invoke(
        app,
        ["train", "--data", str(session), "--model", str(cfg), "--out", str(run), *cpu],
        env=wide,
    )
    assert trained.exit_code == 0, trained.output
    scored = runner.invoke(
        app,
        ["evaluate", str(run), "--data", str(session), "--split", "val", "--out", str(preds), *cpu],
        env=wide,
    )
    assert scored.exit_code == 0, scored.output
    summary = json.loads((preds / "summary.json").read_text())
    assert summary["response_kinds"] == {"lab": kind}
    assert -1 <= summary["corr"] <= 1 and set(summary["corr_per_session"]) == {"lab"}
    epoch = next(line for line in trained.output.splitlines() if line.startswith("epoch   1"))
    if kind == "spikes":
        assert "val BPS" in epoch and epoch.index("val BPS") < epoch.index(" r ")
        assert "val bits per spike" in scored.output and "mean val BPS" in scored.output
        assert GAIN_LABEL not in trained.output + scored.output
        return
    # The correlation first, then the Poisson score under its own name, never as bits per spike.
    assert epoch.index("val r ") < epoch.index(GAIN_LABEL)
    assert f"val r ┃ val {GAIN_LABEL} ┃" in trained.output  # the final table
    assert f"mean val r {summary['corr']:.4f}, {GAIN_LABEL} " in scored.output
    assert f"val correlation and {GAIN_LABEL}" in scored.output
    for text in (trained.output, scored.output):
        assert "BPS" not in text and "bits per spike" not in text


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


def test_predict_a_new_stimulus(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    run = tmp_path / "run"
    args = ["train", "--data", str(sim_dir), "--model", str(cfg), "--out", str(run)]
    assert runner.invoke(app, [*args, "--device", "cpu", "--epochs", "1"]).exit_code == 0
    preds = tmp_path / "preds"
    args = ["evaluate", str(run), "--data", str(sim_dir), "--split", "test", "--out", str(preds)]
    assert runner.invoke(app, [*args, "--device", "cpu"]).exit_code == 0
    scored = np.load(preds / "sim00.npz")

    # The session's own movie and behaviour as a "new" stimulus: one target per window, so the
    # rates at the test bins are exactly the ones evaluate scored.
    out = tmp_path / "pred.h5"
    args = ["predict", str(run), "--stim", str(sim_dir / "sim00.h5"), "--session", "sim00"]
    result = runner.invoke(app, [*args, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        rates, predicted = f["rates"][()], f["predicted"][()]
        assert f.attrs["session"] == "sim00" and f.attrs["behavior"] == "given"
    with h5py.File(sim_dir / "sim00.h5", "r") as f:
        t, n = f["robs"].shape
    assert rates.shape == (t, n) and predicted.sum() > 0.9 * t
    assert np.isnan(rates[~predicted]).all() and (rates[predicted] > 0).all()
    np.testing.assert_allclose(rates[scored["bins"]], scored["rates"], rtol=1e-5, atol=1e-7)

    # A movie with no behaviour and no blocks: the session's mean behaviour stands in.
    movie = tmp_path / "movie.h5"
    with h5py.File(sim_dir / "sim00.h5", "r") as f, h5py.File(movie, "w") as g:
        g["stim"] = f["stim"][:500]
        g.attrs["frame_rate"] = f.attrs["frame_rate"]
    result = runner.invoke(
        app, ["predict", str(run), "--stim", str(movie), "--session", "sim00", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f["predicted"][()].sum() == 500 - 5 and f.attrs["behavior"] == "mean"

    # Bad input: one line, exit 2, nothing written.
    small = tmp_path / "small.h5"
    with h5py.File(small, "w") as g:
        g["stim"] = np.zeros((100, 8, 8), np.uint8)
    bad = tmp_path / "bad.h5"
    result = runner.invoke(
        app, ["predict", str(run), "--stim", str(small), "--session", "sim00", "--out", str(bad)]
    )
    assert result.exit_code == 2 and "resample the movie" in result.output and not bad.exists()
    result = runner.invoke(app, ["predict", str(run), "--stim", str(movie), "--out", str(bad)])
    assert result.exit_code == 2 and "pick one with --session" in result.output


@pytest.fixture(scope="module")
def trained_run(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViViT trained for one short epoch on ``sim_dir`` (tests copy it to change it)."""
    folder = tmp_path_factory.mktemp("trained")
    cfg = folder / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    run = folder / "run"
    args = ["train", "--data", str(sim_dir), "--model", str(cfg), "--out", str(run)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return run


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluate_refuses_to_write_into_the_run_it_scores(
    trained_run: Path, sim_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _files(run)
    # The run folder itself, by another spelling: evaluate's summary.json would replace train's.
    for out in (run, tmp_path / "." / "run" / "checkpoints" / ".."):
        args = ["evaluate", str(run), "--data", str(sim_dir), "--out", str(out)]
        result = runner.invoke(app, [*args, "--device", "cpu"])
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: --out {out}: is the run directory {run} that this command reads (writing it "
            f"would destroy the input); pass another folder, e.g. --out {run / 'test'}\n"
        )
    assert _files(run) == before


def test_predict_refuses_to_write_over_its_stimulus(
    trained_run: Path, sim_dir: Path, tmp_path: Path
) -> None:
    stim = tmp_path / "movie.h5"
    shutil.copy(sim_dir / "sim00.h5", stim)
    before = stim.read_bytes()
    link = tmp_path / "link.h5"  # the same file by another name
    link.symlink_to(stim)
    args = ["predict", str(trained_run), "--stim", str(stim), "--session", "sim00"]
    for out in (stim, link):
        result = runner.invoke(app, [*args, "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: --out {out}: is the --stim file {stim} that this command reads (writing it "
            "would destroy the input); pass another --out\n"
        )
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    folder = f"error: --out {tmp_path}: is a folder; pass the path of a file to write\n"
    assert result.output == folder
    assert stim.read_bytes() == before and link.is_symlink()
    assert sorted(tmp_path.iterdir()) == [link, stim]  # nothing half-written beside them
