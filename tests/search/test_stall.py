"""A hung trial (:func:`vivit_hpo.testing.faults.hang_env` hangs a real worker's training
after its first epoch) is stopped by the progress watchdog: re-enqueued as the node's fault
with the stall reason, its worker stops (exit 75) and ``vivit-hpo run`` returns. A worker
waiting for the database through an outage longer than ``heartbeat.stall_s`` is not hung: the
watchdog leaves it alone, and the run completes; nor is a test pass longer than ``stall_s``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
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

from vivit_hpo.infra import INFRA_EXIT_CODE
from vivit_hpo.search.record import FAIL_REASON, RETRY_CAUSES
from vivit_hpo.search.storage import ENV_MAX_WAIT, open_storage
from vivit_hpo.search.study import load_study, progress
from vivit_hpo.testing.faults import hang_env
from vivit_hpo.testing.pgserver import PostgresServer

pytestmark = pytest.mark.postgres


def _spec(write_spec: Callable[..., Path]) -> Path:
    return write_spec(
        budget={"n_trials": 1},
        epochs=3,
        pruner={"name": "none"},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        # stall_s well above any real step or validation pass on a loaded machine (a shorter one
        # called the first epoch stalled in a full suite run); the injected hang lasts for ever.
        heartbeat={"interval_s": 1, "grace_s": 30, "max_retry": 2, "stall_s": 15},
    )


def _hang_env(mode: str, pg_url: str, home: Path) -> dict[str, str]:
    return hang_env(mode, worker_env(pg_url, home))


def _assert_stalled_and_requeued(study: optuna.Study) -> None:
    stalled, retry = study.get_trials()
    assert stalled.state == TrialState.FAIL, stalled
    why = stalled.user_attrs["fail_reason"]
    assert why.startswith("infrastructure error (re-enqueued): stalled: no training step for"), why
    assert "raise heartbeat.stall_s" in why, why
    assert sorted(stalled.intermediate_values) == [1]  # it hung after its first epoch
    assert retry.state == TrialState.WAITING
    assert [c["cause"] for c in retry.system_attrs[RETRY_CAUSES]] == ["infrastructure"]


def test_a_hung_trial_is_requeued_and_run_returns(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    study = create(pg_url, study_name, _spec(write_spec))
    run = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "run", study_name, "--workers", "1"],
        cwd=tmp_path,
        env={**_hang_env("wait", pg_url, tmp_path), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == INFRA_EXIT_CODE, out
    assert "worker 0 not restarted: infrastructure error, worker stopped" in out, out
    assert "stalled: no training step" in out, out
    _assert_stalled_and_requeued(study)


def test_a_trial_hung_where_no_signal_reaches_is_handed_back_and_the_worker_exits(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    study = create(pg_url, study_name, _spec(write_spec))
    log = tmp_path / "w.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "worker", study_name, "--device", "cpu"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=_hang_env("deaf", pg_url, tmp_path),
        cwd=tmp_path,
    )
    assert finish([proc], 180, [log]) == [INFRA_EXIT_CODE], logs_text([log])
    text = log.read_text()
    assert "the main thread did not take the stall" in text, text
    assert "error: infrastructure error, worker stopped" in text, text
    _assert_stalled_and_requeued(study)
    # The node is fine again: a healthy worker resumes the retry and finishes the study.
    healthy = start_worker(study_name, pg_url, tmp_path, tmp_path / "h.log")
    assert finish([healthy], 180, [tmp_path / "h.log"]) == [0], logs_text([tmp_path / "h.log"])
    assert study.get_trials()[-1].state == TrialState.COMPLETE


_STALLED = "the running trial stalled"  # the watchdog's line when it fires


@pytest.mark.parametrize(
    ("give_up_s", "reason"),
    [
        # Storage calls retried all through the outage (the default give-up time is minutes).
        (None, "lost its heartbeat"),
        # Given up after 2 s: the trial is handed back, which waits for the database.
        ("2", "the database was unreachable"),
    ],
    ids=["retried", "handed-back"],
)
def test_an_outage_longer_than_stall_s_is_no_stall(
    write_spec: Callable[..., Path],
    private_pg: PostgresServer,
    tmp_path: Path,
    give_up_s: str | None,
    reason: str,
) -> None:
    url = private_pg.url()
    # The heartbeat is lost grace_s - interval_s = 24 s into the outage: past stall_s by the
    # worker's own clock, which is what the outage waits for below.
    spec_path = write_spec(
        budget={"n_trials": 1},
        epochs=12,
        pruner={"name": "none"},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        heartbeat={"interval_s": 1, "grace_s": 25, "max_retry": 2, "stall_s": 15},
    )
    study = create(url, "outage", spec_path)
    env = {**worker_env(url, tmp_path), "COLUMNS": "400"}
    if give_up_s is not None:
        env[ENV_MAX_WAIT] = give_up_s
    out = tmp_path / "run.log"
    with open(out, "wb") as f:
        run = subprocess.Popen(
            [sys.executable, "-m", "vivit_hpo", "run", "outage", "--workers", "1"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    wait_for(lambda: running_with_reports(study), 240, "a running trial's reports")
    log = wait_for(lambda: list(tmp_path.glob("artifacts/**/worker-0.log")), 10, "a log")[0]
    private_pg.stop()
    seen = wait_for(
        lambda: next(
            (s for s in ("stopping trial id", _STALLED) if s in log.read_text()),
            "exited" if run.poll() is not None else None,
        ),
        120,
        "the worker to lose its heartbeat (or its watchdog to fire)",
    )
    assert seen == "stopping trial id", logs_text([out, log])
    private_pg.start()
    assert finish([run], 300, [out, log]) == [0], logs_text([out, log])
    text = log.read_text()
    assert _STALLED not in text and text.count("starting worker") == 1, text
    trials = load_study(open_storage(url), "outage").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], trials
    first, retry = trials
    assert first.user_attrs[FAIL_REASON].startswith(reason), first.user_attrs
    assert retry.user_attrs.get("resumed_from_epoch", 0) >= 2, retry.user_attrs
    p = progress(trials, 1)
    assert p.done and (p.complete, p.failed, p.retried) == (1, 0, 1), p


def test_a_test_pass_longer_than_stall_s_is_no_stall(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # Each of the suite's 35 test batches made 0.6 s slower: a 21 s test pass past stall_s 15,
    # each batch of it well within. Stalled, its every retry would score it again, stalled.
    study = create(pg_url, study_name, _spec(write_spec))
    log = tmp_path / "w.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "worker", study_name, "--device", "cpu"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=_hang_env("slow-test", pg_url, tmp_path),
        cwd=tmp_path,
    )
    assert finish([proc], 300, [log]) == [0], logs_text([log])
    assert _STALLED not in log.read_text(), log.read_text()
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and "test_bps" in trial.user_attrs, trial


def test_a_trial_that_stalls_while_the_database_is_down_is_handed_back_once_it_is_up(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    study = create(url, "stalled", _spec(write_spec))
    log = tmp_path / "w.log"
    env = {**_hang_env("wait", url, tmp_path), ENV_MAX_WAIT: "2"}  # storage gives up in ~2 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "worker", "stalled", "--device", "cpu"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    wait_for(lambda: running_with_reports(study, n=1), 180, "the first epoch, then the hang")
    private_pg.stop()
    # The stall fires while the database is down; handing the trial back gives up, and waits.
    seen = wait_for(
        lambda: "waiting for it to hand trial" in log.read_text() or proc.poll() is not None,
        180,
        "the worker to wait for the database (or to exit)",
    )
    assert seen is True and proc.poll() is None, log.read_text()
    assert _STALLED in log.read_text(), log.read_text()
    private_pg.start()
    assert finish([proc], 180, [log]) == [INFRA_EXIT_CODE], logs_text([log])
    assert "Traceback" not in log.read_text(), log.read_text()
    _assert_stalled_and_requeued(load_study(open_storage(url), "stalled"))
