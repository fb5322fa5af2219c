"""A retried trial whose ``last.pt`` was torn between its attempts starts again (a study keeps
no other full checkpoint) with one log line, and completes, instead of failing and dropping its
folder: real workers, a real SIGINT, a real file truncated. A worker SIGKILLed mid-way through
ending an epoch (between its record and its commit) leaves no committed epoch unrecorded."""

from __future__ import annotations

import json
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
    worker_env,
)

from vivit_hpo.bench.chaos.checks import overlapping_epochs
from vivit_hpo.search.record import latest_by_epoch, read_epochs
from vivit_hpo.testing.faults import kill_mid_epoch_env, tear

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


def test_a_worker_killed_between_an_epochs_record_and_its_commit_leaves_it_recorded(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 1}, epochs=4, pruner={"name": "none"}, space=FEASIBLE
    )
    study = create(pg_url, study_name, spec_path)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    # Worker A kills itself right after the first of epoch 2's two steps (its record, its
    # commit); worker B fails the trial as stale once its heartbeat stops and runs the retry.
    env = kill_mid_epoch_env(2, worker_env(pg_url, tmp_path))
    a = start_worker(study_name, pg_url, tmp_path, logs[0], env=env)
    assert finish([a], 180, logs) == [-signal.SIGKILL], logs_text(logs)
    b = start_worker(study_name, pg_url, tmp_path, logs[1])
    assert finish([b], 240, logs) == [0], logs_text(logs)

    first, retry = study.get_trials()
    assert (first.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE), logs_text(logs)
    assert retry.system_attrs["failed_trial"] == first.number
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]
    folder = Path(retry.user_attrs["trial_dir"])
    rows = json.loads((folder / "metrics.json").read_text())
    committed = [int(row["epoch"]) for row in rows]
    assert committed == [1, 2, 3, 4]
    records = [r for f in sorted(folder.parent.glob("trial-*")) for r in read_epochs(f)]
    # Every committed epoch has a record of who trained it, and no two workers overlapped.
    assert set(committed) <= {r.epoch for r in records}, records
    assert overlapping_epochs(records, {retry.number: first.number}) == []
    # Epoch 2 was recorded, not committed: the retry trained it again, and its record counts.
    assert retry.user_attrs["resumed_from_epoch"] == 1
    latest = latest_by_epoch(read_epochs(folder))
    assert [latest[e].val_bps for e in committed] == [row["val_bps"] for row in rows]
    assert latest[2].worker.endswith(f":{b.pid}")
