"""Claims, heartbeats and outages with real processes: a trial claimed but never beaten, the
database stopped briefly and for longer than the grace period, one worker cut off the database
while the others carry on. The outages stop a PostgreSQL server of the test's own."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from search_helpers import (
    CuttableProxy,
    create,
    finish,
    logs_text,
    running_with_reports,
    start_worker,
    wait_for,
    worker_env,
)

from vivit_hpo.bench.chaos import overlapping_epochs
from vivit_hpo.search.record import FAIL_REASON, read_epochs
from vivit_hpo.search.storage import (
    CONNECTIVITY,
    ENV_MAX_WAIT,
    StaleCheck,
    open_storage,
    retrying,
)
from vivit_hpo.search.study import load_study, progress
from vivit_hpo.testing.faults import PAUSE_POINTS, pause_open_env
from vivit_hpo.testing.pgserver import PostgresServer, postgres_server

pytestmark = pytest.mark.postgres

# Every config feasible; long enough to be running when an outage starts (24 tiny epochs).
FEASIBLE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}}
LONG = {"epochs": 24, "pruner": {"name": "none"}, "space": FEASIBLE}


def test_a_trial_claimed_but_never_beaten_is_failed_and_retried(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 2}, epochs=2, pruner={"name": "none"}, space=FEASIBLE
    )
    study = create(pg_url, study_name, spec_path)
    # A process claims a trial (RUNNING in the database) and is killed before its first beat.
    claimer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, optuna; from vivit_hpo.search.storage import open_storage; "
            f"s = optuna.load_study(study_name={study_name!r}, storage=open_storage()); "
            "print(s.ask().number, flush=True); time.sleep(600)",
        ],
        env=worker_env(pg_url, tmp_path),
        stdout=subprocess.PIPE,
    )
    assert claimer.stdout is not None
    orphan = int(claimer.stdout.readline())
    claimer.kill()
    claimer.wait()
    log = tmp_path / "w.log"
    # Without the check the worker waits for the orphan forever and never exits.
    codes = finish([start_worker(study_name, pg_url, tmp_path, log)], 180, [log])
    assert codes == [0], logs_text([log])
    trials = {t.number: t for t in study.get_trials()}
    assert trials[orphan].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == orphan]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    p = progress(list(trials.values()), 2)
    assert p.done and p.logical == 2 and p.complete == 2, p


def _stale_fixture(server: PostgresServer) -> tuple[optuna.Study, StaleCheck, int]:
    """A study on ``server`` with one RUNNING trial whose last beat is now, and a check."""
    storage = open_storage(server.url(), heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="stale", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    return study, StaleCheck(storage), trial._trial_id


def test_nothing_is_stale_until_the_server_has_been_up_a_grace_period(
    private_pg: PostgresServer,
) -> None:
    study, check, tid = _stale_fixture(private_pg)
    private_pg.stop()
    time.sleep(5)  # the trial's beat is now older than the grace period (3 s)
    private_pg.start()
    # Just back: every heartbeat is old, and its worker has had no time to write the next.
    assert check.stale_ids(study) == []
    assert wait_for(lambda: check.stale_ids(study), 30, "the trial to count as stale") == [tid]


def test_nothing_is_stale_until_this_process_has_reached_the_database_a_grace_period(
    private_pg: PostgresServer,
) -> None:
    proxy = CuttableProxy(private_pg.port)
    storage = open_storage(proxy.url("postgres"), heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="cut", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    check = StaleCheck(storage)
    wait_for(lambda: check.stale_ids(study), 30, "the trial to count as stale")
    # This process is cut off (the server keeps running); a storage call rides it out.
    proxy.cut()
    threading.Timer(2.0, proxy.restore).start()
    retrying(lambda: storage.get_all_studies(), what="list studies", first_delay_s=0.2)
    assert check.stale_ids(study) == []  # the others may not have reconnected yet
    assert wait_for(lambda: check.stale_ids(study), 30, "the trial to count as stale again")


def test_a_worker_started_while_the_database_is_down_waits_for_it(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    spec_path = write_spec(
        budget={"n_trials": 1}, epochs=2, pruner={"name": "none"}, space=FEASIBLE
    )
    create(url, "late", spec_path)
    private_pg.stop()
    log = tmp_path / "w.log"
    worker = start_worker("late", url, tmp_path, log)
    wait_for(lambda: "connect failed" in log.read_text(), 60, "the worker to find no server")
    private_pg.start()
    assert finish([worker], 180, [log]) == [0], logs_text([log])
    assert [t.state for t in load_study(open_storage(url), "late").get_trials()] == [
        TrialState.COMPLETE
    ]


@pytest.mark.parametrize("point", PAUSE_POINTS)
def test_a_worker_waits_for_an_outage_that_begins_while_it_opens_the_study(
    point: str, write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    """The server stops between the worker's two opens, or inside the second after its first
    connection; storage calls give up at once (``0``), so only the start's wait
    (``CONNECT_WAIT_S``) keeps the worker from exiting 2."""
    url = private_pg.url()
    spec_path = write_spec(
        budget={"n_trials": 1}, epochs=2, pruner={"name": "none"}, space=FEASIBLE
    )
    create(url, "opening", spec_path)
    log = tmp_path / "w.log"
    env = {**pause_open_env(point, tmp_path, worker_env(url, tmp_path)), ENV_MAX_WAIT: "0"}
    worker = start_worker("opening", url, tmp_path, log, env=env)
    wait_for(lambda: (tmp_path / "paused").exists() or worker.poll() is not None, 120, "pause")
    assert worker.poll() is None, log.read_text()
    private_pg.stop()
    (tmp_path / "resume").touch()
    wait_for(lambda: "; retry 1 in" in log.read_text() or worker.poll() is not None, 60, "a wait")
    assert worker.poll() is None, log.read_text()  # without the wait: exit 2 at once
    private_pg.start()
    assert finish([worker], 180, [log]) == [0], logs_text([log])
    assert [t.state for t in load_study(open_storage(url), "opening").get_trials()] == [
        TrialState.COMPLETE
    ]


def test_a_brief_outage_changes_nothing(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    spec_path = write_spec(
        budget={"n_trials": 2}, heartbeat={"interval_s": 1, "grace_s": 8, "max_retry": 2}, **LONG
    )
    study = create(url, "brief", spec_path)
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [start_worker("brief", url, tmp_path, log) for log in logs]
    wait_for(lambda: running_with_reports(study), 120, "a running trial's reports")
    private_pg.stop()
    time.sleep(3)  # shorter than the 7 s after which a worker gives its trial up
    private_pg.start()
    assert finish(procs, 300, logs) == [0, 0], logs_text(logs)
    text = logs_text(logs)
    assert "storage: " in text or "heartbeat of trial" in text, text  # the outage was seen
    assert "given up" not in text and "is stale" not in text, text
    trials = load_study(open_storage(url), "brief").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_a_long_outage_hands_every_running_trial_back_to_resume(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    spec_path = write_spec(
        budget={"n_trials": 2}, heartbeat={"interval_s": 1, "grace_s": 6, "max_retry": 2}, **LONG
    )
    study = create(url, "long", spec_path)
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [start_worker("long", url, tmp_path, log) for log in logs]
    wait_for(
        lambda: running_with_reports(study, n=2, trials=2), 180, "two running trials with reports"
    )
    private_pg.stop()
    time.sleep(12)  # longer than the grace period: no heartbeat for 12 s
    private_pg.start()
    assert finish(procs, 400, logs) == [0, 0], logs_text(logs)
    text = logs_text(logs)
    # Each worker gave its trial up and handed it back itself; none was failed as stale.
    assert text.count("given up") == 2 and "is stale" not in text, text
    trials = load_study(open_storage(url), "long").get_trials()
    handed_back = [t for t in trials if t.state == TrialState.FAIL]
    assert len(handed_back) == 2, [(t.number, t.state) for t in trials]
    assert all(t.user_attrs[FAIL_REASON].startswith("lost its heartbeat") for t in handed_back)
    retries = [t for t in trials if t.system_attrs.get("retry_history")]
    assert len(retries) == 2 and all(t.state == TrialState.COMPLETE for t in retries)
    assert all(t.user_attrs.get("resumed_from_epoch", 0) >= 2 for t in retries), [
        t.user_attrs for t in retries
    ]
    p = progress(trials, 2)
    assert p.done and p.logical == 2 and p.complete == 2, p


def test_a_worker_cut_off_the_database_stops_its_trial_before_another_resumes_it(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    spec_path = write_spec(
        budget={"n_trials": 2}, heartbeat={"interval_s": 1, "grace_s": 6, "max_retry": 2}, **LONG
    )
    study = create(url, "cut", spec_path)
    proxy = CuttableProxy(private_pg.port)
    logs = [tmp_path / "cut.log", tmp_path / "other.log"]
    cut_off = start_worker("cut", proxy.url("postgres"), tmp_path, logs[0], "--n-trials", "1")
    wait_for(lambda: running_with_reports(study), 120, "the first worker's trial to report")
    victim = next(t for t in study.get_trials() if t.state == TrialState.RUNNING)
    other = start_worker("cut", url, tmp_path, logs[1])
    proxy.cut()
    # The other worker fails the trial as stale after the grace period and resumes it; the
    # cut-off worker must have stopped training it by then.
    retry = wait_for(
        lambda: next(
            (
                t
                for t in study.get_trials(deepcopy=False)
                if t.system_attrs.get("failed_trial") == victim.number
                and t.state == TrialState.RUNNING
            ),
            None,
        ),
        120,
        "the retry of the cut-off worker's trial to run",
    )
    stopped = logs[0].read_text()
    assert "stopping trial id" in stopped, stopped  # before the retry started
    proxy.restore()
    assert finish([cut_off, other], 300, logs) == [0, 0], logs_text(logs)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[retry.number].state == TrialState.COMPLETE
    assert trials[retry.number].user_attrs.get("resumed_from_trial") == victim.number
    assert "is stale" in logs[1].read_text()
    # Who trained each epoch: the cut-off worker's last epoch ended before the retry's first.
    records = [r for f in tmp_path.glob("artifacts/**/epochs.jsonl") for r in read_epochs(f.parent)]
    chain = sorted(
        (r for r in records if r.trial in (victim.number, retry.number)), key=lambda r: r.start
    )
    assert {r.trial for r in chain} == {victim.number, retry.number}, chain
    assert overlapping_epochs(chain, {retry.number: victim.number}) == []
    first_of_retry = min(r.start for r in chain if r.trial == retry.number)
    assert max(r.end for r in chain if r.trial == victim.number) <= first_of_retry


def test_sessions_run_in_utc_whatever_the_servers_time_zone() -> None:
    # Heartbeats are stored in the session's zone: a local zone's DST jump would age them all.
    with postgres_server(settings={"timezone": "'America/New_York'"}) as server:
        storage = open_storage(server.url(), heartbeat_interval=1, grace_period=3)
        with storage.engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SHOW TimeZone")).scalar() == "UTC"
        storage.engine.dispose()


# A process that runs one stale check and is SIGKILLed right after the first of its two steps
# (enqueue the retry, fail the trial), whichever comes first: the state a crash leaves.
_KILLED_MID_CHECK = """
import os, signal, sys, time
import optuna
from vivit_hpo.search.storage import StaleCheck, claim_lock, open_storage

storage = open_storage(sys.argv[1], heartbeat_interval=1, grace_period=3, max_retry=3)
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
check = StaleCheck(storage)


def then_killed(step):
    def run(*args, **kwargs):
        step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    return run


storage.set_trial_state_values = then_killed(storage.set_trial_state_values)
storage.heartbeat_stale_trial_callback = then_killed(storage.heartbeat_stale_trial_callback)
while not check.stale_ids(study):
    time.sleep(0.2)
with claim_lock(storage, study.study_name):
    check(study)
"""


def test_a_stale_check_killed_between_its_two_steps_loses_no_retry(
    private_pg: PostgresServer, tmp_path: Path
) -> None:
    study, _, tid = _stale_fixture(private_pg)
    stale = study._storage.get_trial(tid).number
    checker = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_CHECK, private_pg.url(), study.study_name],
        env=worker_env(private_pg.url(), tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checker.returncode == -9, checker.stderr  # killed mid-check, as a crash would
    # A second check, by another process, finds what the first left and completes it.
    storage = open_storage(private_pg.url(), heartbeat_interval=1, grace_period=3, max_retry=3)
    again = optuna.load_study(study_name=study.study_name, storage=storage)
    check = StaleCheck(storage)
    wait_for(lambda: CONNECTIVITY.connected_for() > check.grace_s, 30, "a sound stale check")
    check(again)
    check(again)  # and a third pass changes nothing
    trials = again.get_trials()
    retries = [t for t in trials if t.system_attrs.get("retry_history") == [stale]]
    assert [t.state for t in retries] == [TrialState.WAITING], trials
    assert again.get_trials()[stale].state == TrialState.FAIL
    p = progress(trials, 1)
    assert (p.retried, p.waiting, p.logical) == (1, 1, 1), p


# Storage calls give up after 2 s: an outage of a few seconds outlasts them.
_GIVE_UP = {"VIVIT_HPO_STORAGE_MAX_WAIT_S": "2"}
# A grace period longer than any outage here: the trial is stopped by its storage calls giving
# up, not by its heartbeat's watchdog.
_PATIENT = {"interval_s": 1, "grace_s": 120, "max_retry": 2}


def _checkpoints(home: Path) -> list[Path]:
    return sorted(home.glob("artifacts/**/checkpoints/last.pt"))


def _resumed_after_the_outage(url: str, name: str) -> None:
    """The trial was handed back, not failed, and its retry resumed from its checkpoint."""
    trials = load_study(open_storage(url), name).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], trials
    first, retry = trials
    assert first.user_attrs[FAIL_REASON].startswith("the database was unreachable"), first
    assert retry.system_attrs["retry_history"] == [first.number]
    assert retry.user_attrs.get("resumed_from_epoch", 0) >= 2, retry.user_attrs
    p = progress(trials, 1)
    assert p.done and (p.complete, p.failed, p.retried) == (1, 0, 1), p


def test_an_outage_past_the_give_up_time_hands_the_trial_back_to_resume(
    write_spec: Callable[..., Path],
    private_pg: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in _GIVE_UP.items():
        monkeypatch.setenv(key, value)
    url = private_pg.url()
    spec_path = write_spec(budget={"n_trials": 1}, heartbeat=_PATIENT, **LONG)
    study = create(url, "giveup", spec_path)
    log = tmp_path / "w.log"
    worker = start_worker("giveup", url, tmp_path, log)
    wait_for(lambda: running_with_reports(study), 120, "a running trial's reports")
    private_pg.stop()
    wait_for(lambda: "waiting for it to hand trial" in log.read_text(), 120, "the worker to wait")
    assert worker.poll() is None and len(_checkpoints(tmp_path)) == 1, log.read_text()
    private_pg.start()
    assert finish([worker], 300, [log]) == [0], logs_text([log])
    assert "crashed" not in log.read_text()
    _resumed_after_the_outage(url, "giveup")


def test_run_supervises_its_workers_through_an_outage_past_the_give_up_time(
    write_spec: Callable[..., Path], private_pg: PostgresServer, tmp_path: Path
) -> None:
    url = private_pg.url()
    spec_path = write_spec(budget={"n_trials": 1}, heartbeat=_PATIENT, **LONG)
    study = create(url, "runout", spec_path)
    out = tmp_path / "run.log"
    with open(out, "wb") as f:
        run = subprocess.Popen(
            [sys.executable, "-m", "vivit_hpo", "run", "runout", "--workers", "1"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**worker_env(url, tmp_path), **_GIVE_UP},
            cwd=tmp_path,
        )
    wait_for(lambda: running_with_reports(study), 120, "a running trial's reports")
    private_pg.stop()
    wait_for(lambda: "database unreachable" in out.read_text(), 120, "run to see the outage")
    worker_log = wait_for(lambda: list(tmp_path.glob("artifacts/**/worker-0.log")), 10, "a log")
    wait_for(lambda: "waiting for it to hand trial" in worker_log[0].read_text(), 120, "the worker")
    assert run.poll() is None, out.read_text()
    private_pg.start()
    assert finish([run], 300, [out, worker_log[0]]) == [0], logs_text([out, worker_log[0]])
    assert "database reachable again" in out.read_text()
    assert worker_log[0].read_text().count("starting worker") == 1  # never restarted
    _resumed_after_the_outage(url, "runout")
