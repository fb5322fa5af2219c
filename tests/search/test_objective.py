"""A trial's final test score (:mod:`vivit_hpo.search.objective`) is the score of its best
checkpoint as :func:`~vivit_hpo.training.run.score_best` gives it, the one ``vivit-hpo train``
writes to ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vivit_hpo.metrics import mean_over_sessions
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import create_study, load_study
from vivit_hpo.search.worker import run_worker
from vivit_hpo.training.checkpoint import read_run_config
from vivit_hpo.training.run import load_run_sessions, score_best


def test_a_trials_test_bps_is_its_best_checkpoints_score(
    write_spec: Any, sim_dir: Path, tmp_path: Path
) -> None:
    spec = load_spec(
        write_spec(
            epochs=1,
            budget={"n_trials": 1},
            pruner={"name": "none"},
            space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        )
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    create_study(open_storage(url), "obj", spec)
    run_worker("obj", url, n_trials=1, device="cpu", install_signals=False)
    (t,) = load_study(open_storage(url), "obj").get_trials()
    assert t.state.name == "COMPLETE", t.user_attrs
    run_dir = Path(t.user_attrs["trial_dir"])
    data = load_run_sessions([sim_dir], read_run_config(run_dir))
    test = mean_over_sessions(score_best(run_dir, data, ["test"])["test"])
    assert t.user_attrs["test_bps"] == pytest.approx(test.bps, abs=1e-9)
    assert t.user_attrs["test_bps_per_session"] == pytest.approx(test.per_session, abs=1e-9)
