"""``vivit-hpo bench models`` on a tiny spec and a fraction of a minute: the JSON's rows and the
table (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.testing import tiny_spec

YARD = {
    "model": {
        "core": {"kind": "cnn", "channels": [4], "blocks_per_stage": 1},
        "modulator": {"hidden_dim": 4},
    },
    "data": {"num_lags": 6, "max_val_bins": 32},
    "train": {"batch_size": 16, "warmup_epochs": 0},
}


def test_bench_models(sim_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cnn_tiny.yaml").write_text(yaml.safe_dump(YARD))
    spec = tiny_spec(
        description="",
        data={"paths": [str(sim_dir)]},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        epochs=2,
        baseline=True,
        baselines=["cnn_tiny.yaml"],
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},
        budget={"n_trials": 2},
        heartbeat={"interval_s": 1, "grace_s": 4, "max_retry": 1},
        artifacts={"dir": str(tmp_path / "artifacts")},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    args = ["bench", "models", "--spec", str(path), "--minutes", "0.5", "--workers", "1"]
    res = CliRunner().invoke(
        app,
        [*args, "--out", str(out)],
        env={"VIVIT_HPO_HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "COLUMNS": "80"},
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "bench_models.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert list(rows) == ["best ViViT", "cnn_tiny"]
    for r in rows.values():
        assert r["test_bps"] is not None and r["params"] > 0 and r["epochs"] >= 1
    assert "best ViViT" in res.output and "cnn_tiny" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
