"""A retried trial whose ``last.pt`` was torn between its attempts starts again (a study keeps
no other full checkpoint) with one log line, and completes, instead of failing and dropping its
folder: real workers, a real SIGINT, a real file truncated."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_helpers import (
    create,
    finish,
    logs_text,
    running_with_reports,
    start_worker,
    wait_for,
)

from vivit_hpo.testing.faults import tear

pytestmark = pytest.mark.postgres

FEASIBLE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}}


def test_a_torn_last_checkpoint_restarts_the_retried_trial_instead_of_failing_it(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 1}, epochs=12, pruner={"name": "none"}, space=FEASIBLE
    )
    study = create(pg_url, study_name, spec_path)
    first_log, second_log = tmp_path / "w0.log", tmp_path / "w1.log"
    worker = start_worker(study_name, pg_url, tmp_path, first_log)
    wait_for(lambda: running_with_reports(study, 3), 120, "three epochs reported")
    worker.send_signal(signal.SIGINT)  # handed back: FAIL, and a retry to resume it
    assert finish([worker], 120, [first_log]) == [130], logs_text([first_log])
    (ckpt,) = tmp_path.glob("artifacts/**/checkpoints")
    best_before = sorted(p.name for p in ckpt.glob("best-epoch*.pt"))
    last = ckpt / "last.pt"
    tear(last)  # the first half of the file only
    assert best_before
    worker = start_worker(study_name, pg_url, tmp_path, second_log)
    assert finish([worker], 300, [second_log]) == [0], logs_text([second_log])
    text = second_log.read_text()
    assert text.count("not a readable checkpoint") == 1, text
    assert "no other full checkpoint: starting from scratch" in text, text
    first, retry = study.get_trials()
    assert (first.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert "resumed_from_epoch" not in retry.user_attrs
    assert retry.user_attrs["resumed_from_trial"] == first.number
    # The retry took the folder over, best checkpoints and all (none dropped by a failure).
    (kept,) = tmp_path.glob("artifacts/**/checkpoints")
    assert kept != ckpt and sorted(kept.glob("best-epoch*.pt")), sorted(kept.iterdir())
