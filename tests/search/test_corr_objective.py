"""``objective: corr``: a study on calcium sessions (imported from a Sensorium 2023 folder
written by ``sensorium_helpers``) that maximises the mean per-unit validation correlation, on
the real PostgreSQL; and the labels the study commands give its values."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState
from search_helpers import tiny_spec_tree
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.data import import_sensorium
from vivit_hpo.metrics import GAIN_HEADER
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import load_study
from vivit_hpo.search.worker import run_worker
from vivit_hpo.training.run import best_checkpoint_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from sensorium_helpers import write_mouse

runner = CliRunner(env={"COLUMNS": "250"})
TIERS = [*["train"] * 5, *["oracle"] * 2, "live_test_main", "live_test_bonus"]


@pytest.fixture()
def calcium(tmp_path: Path) -> Path:
    mouse = write_mouse(tmp_path / "dynamic1-2-3-Video-abc", TIERS, h=16, w=16, t=60, min_len=50)
    out = tmp_path / "sessions" / "mouse.h5"
    import_sensorium(mouse.folder, out)
    return out


def _spec(tmp_path: Path, session: Path, **changes: Any) -> Path:
    tree = tiny_spec_tree(session.parent, tmp_path / "artifacts", **changes)
    tree["base"]["overrides"] = ["train.early_stopping_patience=1", "data.max_val_bins=null"]
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_corr_study_reports_selects_and_ends_with_the_correlation(
    calcium: Path, tmp_path: Path, pg_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each epoch's validation correlation and BPS are scripted so that they disagree on the
    # best epoch: the correlation's is epoch 2, the BPS's epoch 1.
    import vivit_hpo.training.loop as loop

    scripted = iter([(0.1, 0.5), (0.3, 0.1), (0.2, 0.2), (0.25, 0.3)])
    real = loop.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        corr, bps = next(scripted)
        got = real(*args, **kwargs).items()
        return {n: dataclasses.replace(s, corr=corr, bps=bps) for n, s in got}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    spec = _spec(
        tmp_path,
        calcium,
        objective="corr",
        epochs=4,
        baseline=True,
        budget={"n_trials": 1},
        pruner={"name": "none"},
        space={"lr": {"value": 3e-3, "to": "train.lr"}},
    )
    env = {"VIVIT_HPO_STORAGE": pg_url}
    created = runner.invoke(app, ["study", "create", study_name, "--spec", str(spec)], env=env)
    assert created.exit_code == 0, created.output
    assert "objective: corr" not in created.output  # no hint: it is set
    assert run_worker(study_name, pg_url, 1, "cpu", install_signals=False).trials == 1
    (t,) = load_study(open_storage(pg_url), study_name).get_trials()
    assert t.state == TrialState.COMPLETE, t.user_attrs
    # Every report the best correlation so far; stopped one epoch after its best (patience 1).
    assert t.intermediate_values == {1: 0.1, 2: 0.3, 3: 0.3}
    assert t.value == 0.3 == t.user_attrs["val_corr"]
    assert t.user_attrs["best_epoch"] == 2 and t.user_attrs["stopped_early"] is True
    assert t.user_attrs["val_bps"] == 0.1  # the Poisson score of that epoch, beside it
    assert t.user_attrs["run_config"]["train"]["objective"] == "corr"
    assert best_checkpoint_path(Path(t.user_attrs["trial_dir"])).name == "best-epoch002.pt"

    shown = runner.invoke(app, ["study", "show", study_name], env=env)
    best = runner.invoke(app, ["study", "best", study_name], env=env)
    for res in (shown, best):
        assert res.exit_code == 0, res.output
        assert "BPS" not in res.output and "bits per spike" not in res.output, res.output
    header = next(line for line in shown.output.splitlines() if "state" in line)
    assert header.index("val r") < header.index("test r") < header.index(f"val {GAIN_HEADER}")
    assert "+0.3000" in shown.output and "+0.1000" in shown.output
    lines = best.output.splitlines()
    first = next(i for i, line in enumerate(lines) if "val r (mean over sessions)" in line)
    assert first < next(i for i, line in enumerate(lines) if f"val {GAIN_HEADER} at" in line)


def test_create_hints_corr_for_calcium_and_refuses_a_bad_objective(
    calcium: Path, sim_dir: Path, tmp_path: Path, pg_url: str, study_name: str
) -> None:
    env = {"VIVIT_HPO_STORAGE": pg_url}
    bad = runner.invoke(
        app,
        ["study", "create", study_name, "--spec", str(_spec(tmp_path, calcium, objective="r"))],
        env=env,
    )
    assert bad.exit_code == 2
    assert (
        bad.output.strip()
        .splitlines()[-1]
        .endswith("objective = 'r': objective must be 'bps' or 'corr'")
    ), bad.output
    made = runner.invoke(
        app, ["study", "create", study_name, "--spec", str(_spec(tmp_path, calcium))], env=env
    )
    assert made.exit_code == 0, made.output
    hints = [line for line in made.output.splitlines() if "objective: corr" in line]
    assert len(hints) == 1 and hints[0].startswith("warning: mouse.h5 hold calcium"), made.output
    # corr on spike counts is allowed, and the default bps on them says nothing.
    tree = tiny_spec_tree(sim_dir, tmp_path / "artifacts", objective="corr")
    path = tmp_path / "spikes.yaml"
    path.write_text(yaml.safe_dump(tree))
    spikes = runner.invoke(
        app, ["study", "create", f"{study_name}-s", "--spec", str(path)], env=env
    )
    try:
        assert spikes.exit_code == 0 and "warning" not in spikes.output, spikes.output
    finally:
        runner.invoke(app, ["study", "delete", f"{study_name}-s", "--yes"], env=env)
