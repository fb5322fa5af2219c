"""Each cause of a retry has its own cap per logical trial, on real workers and a real
PostgreSQL: a trial that always fails on the node ends FAIL after ``max_infra_retries`` (the
workers stop looping on it), and preemptions (SIGTERM) do not spend the retries that a dead
worker (SIGKILL) needs."""

from __future__ import annotations

import functools
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import create, finish, logs_text, start_worker, wait_for, worker_env

from vivit_hpo.infra import INFRA_EXIT_CODE
from vivit_hpo.search.record import RETRY_CAUSES, out_of_retries, retry_of
from vivit_hpo.search.study import progress

pytestmark = pytest.mark.postgres

ONE_LR = {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}}


def _limit_file_size() -> None:
    # No file past 16 KiB (SIGXFSZ ignored): every checkpoint write fails with EFBIG, an
    # infrastructure error, on every attempt, as a config whose error looks like the node's.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**10, 16 * 2**10))


def test_a_trial_failing_on_the_node_every_time_ends_fail_after_its_cap(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    heartbeat = {"interval_s": 1, "grace_s": 4, "max_retry": 2, "max_infra_retries": 1}
    spec = write_spec(
        budget={"n_trials": 1}, epochs=1, pruner={"name": "none"}, space=ONE_LR, heartbeat=heartbeat
    )
    study = create(pg_url, study_name, spec)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    # Each worker stops after one infrastructure error (exit 75), as a restarted container
    # would; without a cap every new worker would take the trial's retry and exit in turn.
    codes = []
    for log in logs:
        proc = start_worker(
            study_name,
            pg_url,
            tmp_path,
            log,
            "--max-infra-errors",
            "1",
            preexec_fn=_limit_file_size,
        )
        codes.append(finish([proc], 120, logs)[0])
    assert codes == [INFRA_EXIT_CODE, INFRA_EXIT_CODE, 0], logs_text(logs)

    first, second = study.get_trials()
    assert first.state == second.state == TrialState.FAIL
    assert first.user_attrs["fail_reason"].startswith("infrastructure error (re-enqueued)")
    why = second.user_attrs["fail_reason"]
    assert why.startswith("failed 2 times with an infrastructure error on 2 workers: "), why
    assert "file too large" in why, why  # the last error
    assert why.endswith("raise heartbeat.max_infra_retries (now 1) or fix the node"), why
    assert second.system_attrs[RETRY_CAUSES][0]["cause"] == "infrastructure"
    p = progress(study.get_trials(), 1)
    assert p.done and p.failed == 1 and p.waiting == 0, p

    env = {**worker_env(pg_url, tmp_path), "COLUMNS": "400"}
    shown = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "study", "show", study_name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "failed 2 times with an infrastructure error" in shown.stdout, shown.stdout


def _running_by(study: optuna.Study, pid: int, past: int) -> optuna.trial.FrozenTrial | None:
    """The trial that worker ``pid`` runs, once it has reported an epoch after ``past``."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("pid") == pid and max(t.intermediate_values, default=0) > past:
            return t
    return None


def test_preemptions_do_not_spend_the_retries_of_a_lost_heartbeat(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec = write_spec(
        budget={"n_trials": 1},
        epochs=12,  # room for four stops, one epoch apart
        pruner={"name": "none"},
        space=ONE_LR,
        heartbeat={"interval_s": 1, "grace_s": 4, "max_retry": 1},
    )
    study = create(pg_url, study_name, spec)
    logs = [tmp_path / f"w{i}.log" for i in range(5)]
    past = 0
    for i, sig in enumerate([signal.SIGTERM] * 3 + [signal.SIGKILL]):
        proc = start_worker(study_name, pg_url, tmp_path, logs[i])
        running = functools.partial(_running_by, study, proc.pid, past)
        got = wait_for(running, 120, f"worker {i}'s epoch")
        past = max(got.intermediate_values)
        proc.send_signal(sig)
        want = 130 if sig == signal.SIGTERM else -signal.SIGKILL
        assert finish([proc], 60, logs) == [want], logs_text(logs)
    last = start_worker(study_name, pg_url, tmp_path, logs[4])
    assert finish([last], 240, logs) == [0], logs_text(logs)

    trials = study.get_trials()
    causes = [c["cause"] for c in trials[-1].system_attrs[RETRY_CAUSES]]
    assert causes == ["interrupt"] * 3 + ["heartbeat"], causes
    assert trials[-1].state == TrialState.COMPLETE, logs_text(logs)  # the one SIGKILL retried
    assert sorted(trials[-1].intermediate_values) == list(range(1, 13))


def test_the_caps_count_their_own_cause_only() -> None:
    t = optuna.create_trial(state=TrialState.FAIL, user_attrs={"host": "h", "pid": 1})
    t.number = 0
    for n, cause in enumerate(["interrupt", "interrupt", "infrastructure"], start=1):
        t = retry_of(t, cause, f"h:{n}")
        t.number = n
    assert out_of_retries(t, "heartbeat", 1, "gone", "h:9") is None
    assert out_of_retries(t, "interrupt", 3, "stopped", "h:9") is None
    assert out_of_retries(t, "interrupt", 2, "stopped", "h:9") == (
        "failed 3 times with its worker stopped by a signal (preempted) on 3 workers: stopped; "
        "raise heartbeat.max_interrupt_retries (now 2) or give the workers longer allocations"
    )
    # A study made before causes were kept: its retries count against no cap.
    old = optuna.create_trial(state=TrialState.FAIL, system_attrs={"retry_history": [0, 1]})
    assert out_of_retries(old, "heartbeat", 1, "gone", None) is None


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_while_handing_a_trial_back_never_leaves_it_failed_without_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    # retry_trial writes twice (the retry, the trial's FAIL); a worker killed after either
    # write must leave the trial RUNNING (the stale check then retries it) or FAIL with its
    # retry waiting, never FAIL with none.
    from vivit_hpo.search.objective import retry_trial
    from vivit_hpo.search.record import retried_numbers

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="handback", storage=storage)
    trial = study.ask()
    writes: list[str] = []

    def dies_at_write(fn: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(fn)
        def write(*args: object, **kwargs: object) -> object:
            writes.append(fn.__name__)
            if len(writes) == crash_at:
                raise KeyboardInterrupt("the worker is killed here")
            return fn(*args, **kwargs)

        return write

    for name in ("_create_new_trial", "set_trial_state_values"):  # what add_trial and FAIL write
        monkeypatch.setattr(storage, name, dies_at_write(getattr(storage, name)))
    with pytest.raises(KeyboardInterrupt):
        retry_trial(
            study, storage, trial._trial_id, "was interrupted", cause="interrupt", worker="w"
        )
    monkeypatch.undo()
    after = optuna.load_study(study_name="handback", storage=url).get_trials(deepcopy=False)
    first = next(t for t in after if t.number == trial.number)
    if first.state == TrialState.FAIL:
        assert trial.number in retried_numbers(after), "FAIL with no retry: the trial is lost"
    else:
        assert first.state == TrialState.RUNNING
    # Run again (a restarted hand-back): FAIL with exactly one retry.
    study = optuna.load_study(study_name="handback", storage=url)
    retry_trial(
        study, study._storage, trial._trial_id, "was interrupted", cause="interrupt", worker="w"
    )
    after = study.get_trials(deepcopy=False)
    assert [t.state for t in after] == [TrialState.FAIL, TrialState.WAITING]
    assert retried_numbers(after) == {trial.number: after[1].number}
