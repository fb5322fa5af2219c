"""A hung trial (tests/search/hang/sitecustomize.py hangs a real worker's training after its
first epoch) is stopped by the progress watchdog: re-enqueued as the node's fault with the stall
reason, its worker stops (exit 75) and ``vivit-hpo run`` returns."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import create, finish, logs_text, start_worker, worker_env

from vivit_hpo.infra import INFRA_EXIT_CODE
from vivit_hpo.search.record import RETRY_CAUSES

pytestmark = pytest.mark.postgres

HANG = Path(__file__).parent / "hang"  # its sitecustomize hangs training when told to


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
    env = worker_env(pg_url, home)
    env["PYTHONPATH"] = f"{HANG}:{env['PYTHONPATH']}"
    env["VIVIT_HPO_TEST_HANG"] = mode
    return env


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
