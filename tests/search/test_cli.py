"""The commands as a user runs them: ``vivit-hpo run`` (real processes, embedded storage)
stopped with Ctrl-C and resumed, a worker of ``run`` killed and restarted, then ``study show /
list / best / export-best / enqueue / delete`` and ``vivit-hpo train`` reproducing the exported
best configuration."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from search_helpers import ROOT, wait_for, worker_env
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import load_study

NAME = "cli-study"


def _run(home: Path, *args: str) -> subprocess.Popen[str]:
    env = worker_env("", home)
    env.pop("VIVIT_HPO_STORAGE")  # the embedded default under $VIVIT_HPO_HOME/storage
    env.pop("OMP_NUM_THREADS")  # `run` decides the threads per worker
    return subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "run", *args],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_run_ctrl_c_resume_and_study_commands(
    write_spec: Callable[..., Path], tmp_path: Path, sim_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    monkeypatch.delenv("VIVIT_HPO_STORAGE", raising=False)
    spec = write_spec(
        budget={"n_trials": 5},
        epochs=8,  # long enough a trial for Ctrl-C to land mid-way
        # A grace far above a loaded machine's heartbeat gaps: no trial here is meant to lose
        # its heartbeat (one did, at 6 s, with the machine loaded at 3x its cores).
        heartbeat={"interval_s": 1, "grace_s": 30},
        space={
            "embed_dim": {"choices": [16, 32], "to": "model.core.embed_dim"},
            "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
        },
        pruner={"name": "none"},  # every trial completes: a best trial to export
        baseline=True,  # the base config is trial 0
    )
    url = f"sqlite:///{tmp_path / 'storage' / 'vivit-hpo.db'}"

    # 1. Start the study with 2 workers; Ctrl-C once a trial has finished an epoch.
    first = _run(tmp_path, NAME, "--spec", str(spec), "--workers", "2")

    def reported() -> bool:
        if not (tmp_path / "storage" / "vivit-hpo.db").exists():
            return False
        try:
            study = load_study(open_storage(url), NAME)
        except Exception:
            return False
        return any(
            t.intermediate_values
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )

    wait_for(
        lambda: reported() or first.poll() is not None,
        180,
        "a running trial's first epoch",
        every=0.2,
    )
    assert first.poll() is None, first.communicate()[0]
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=180)
    assert first.returncode == 130, out
    assert "resume with" in out

    study = load_study(open_storage(url), NAME)
    trials = study.get_trials()
    interrupted = [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and str(t.user_attrs.get("fail_reason", "")).startswith("interrupted")
    ]
    assert interrupted, [(t.number, t.state, t.user_attrs) for t in trials]
    # Every trial the Ctrl-C stopped has its retry waiting, whichever way it was handed back.
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert {t.system_attrs["failed_trial"] for t in waiting} == failed, [
        (t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    # 2. Run again (the study exists, no --spec): it resumes and finishes the budget.
    second = _run(tmp_path, NAME, "--workers", "2")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert "best: trial #" in out
    trials = {t.number: t for t in load_study(open_storage(url), NAME).get_trials()}
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") is not None]
    assert retries and all(t.state.is_finished() for t in retries)
    resumed = [t for t in retries if t.user_attrs.get("resumed_from_epoch", 0) >= 1]
    assert resumed, [(t.number, t.user_attrs) for t in retries]
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The base config went first (embed_dim and lr at the base config's values).
    assert trials[0].user_attrs.get("baseline") is True
    assert trials[0].params == {"embed_dim": 16, "lr": 3e-3}
    # Two CPU workers on this machine share its cores instead of each taking all of them.
    threads = {
        t.user_attrs.get("threads") for t in trials.values() if t.state == TrialState.COMPLETE
    }
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}, threads
    # Every complete trial carries its kept checkpoint's test BPS.
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert complete and all(isinstance(t.user_attrs.get("test_bps"), float) for t in complete)

    runner = CliRunner(env={"COLUMNS": "200"})

    # 3. The study commands, on the embedded storage.
    listed = runner.invoke(app, ["study", "list"])
    assert listed.exit_code == 0 and NAME in listed.output, listed.output
    shown = runner.invoke(app, ["study", "show", NAME])
    assert shown.exit_code == 0, shown.output
    assert "RETRIED" in shown.output and "COMPLETE" in shown.output
    assert "test BPS" in shown.output
    best = runner.invoke(app, ["study", "best", NAME])
    assert best.exit_code == 0 and "val BPS" in best.output, best.output
    assert "test BPS of that checkpoint" in best.output, best.output

    out_yaml = tmp_path / "best.yaml"
    exported = runner.invoke(app, ["study", "export-best", NAME, "--out", str(out_yaml)])
    assert exported.exit_code == 0, exported.output
    cfg = yaml.safe_load(out_yaml.read_text())
    best_trial = max(
        (t for t in trials.values() if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: t.value or 0.0,
    )
    assert cfg == best_trial.user_attrs["run_config"]

    # The winner leaves the study as a run folder that `evaluate` scores as the trial did.
    exported_run = tmp_path / "runs" / "winner"  # its parent folder does not exist yet
    exported = runner.invoke(
        app,
        [
            *("study", "export-best", NAME, "--out", str(out_yaml), "--force"),
            *("--run-dir", str(exported_run)),
        ],
    )
    assert exported.exit_code == 0, exported.output
    again = runner.invoke(
        app,
        [
            *("study", "export-best", NAME, "--out", str(out_yaml), "--force"),
            *("--run-dir", str(exported_run)),
        ],
    )
    assert again.exit_code == 2 and "already exists" in again.output, again.output
    scored = runner.invoke(
        app,
        ["evaluate", str(exported_run), "--data", str(sim_dir), "--out", str(tmp_path / "ev")],
    )
    assert scored.exit_code == 0, scored.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["bps"] == pytest.approx(best_trial.user_attrs["test_bps"], abs=1e-6)

    # 4. `vivit-hpo train` on the exported config reproduces the trial's best validation BPS.
    run_dir = tmp_path / "reproduced"
    env = worker_env("", tmp_path)
    cmd = [sys.executable, "-m", "vivit_hpo", "train", "--data", str(sim_dir), "--model"]
    cmd += [str(out_yaml), "--out", str(run_dir), "--device", "cpu"]
    train = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert max(m["val_bps"] for m in metrics) == pytest.approx(best_trial.value, abs=2e-3)

    # 5. enqueue and delete.
    queued = runner.invoke(
        app, ["study", "enqueue", NAME, "--set", "lr=0.002", "--set", "train.batch_size=8"]
    )
    assert queued.exit_code == 0, queued.output
    waiting = load_study(open_storage(url), NAME).get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == {"lr": 0.002}
    assert waiting[0].user_attrs["extra_overrides"] == {"train.batch_size": 8}
    bad = runner.invoke(app, ["study", "enqueue", NAME, "--set", "strides=2"])
    assert bad.exit_code == 2 and "not a parameter" in bad.output, bad.output

    gone = runner.invoke(app, ["study", "delete", NAME, "--yes"])
    assert gone.exit_code == 0, gone.output
    assert not (tmp_path / "artifacts" / NAME).exists()
    missing = runner.invoke(app, ["study", "show", NAME])
    assert missing.exit_code == 2 and "does not exist" in missing.output


@pytest.mark.slow
def test_run_restarts_a_worker_that_dies(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    monkeypatch.delenv("VIVIT_HPO_STORAGE", raising=False)
    spec = write_spec(
        budget={"n_trials": 2},
        epochs=12,  # long enough a trial to be caught mid-way
        heartbeat={"interval_s": 1, "grace_s": 4},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        pruner={"name": "none"},
    )
    url = f"sqlite:///{tmp_path / 'storage' / 'vivit-hpo.db'}"
    run = _run(tmp_path, NAME, "--spec", str(spec), "--workers", "1")

    def running_pid() -> int | None:
        if not (tmp_path / "storage" / "vivit-hpo.db").exists():
            return None
        try:
            study = load_study(open_storage(url), NAME)
        except Exception:
            return None
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.intermediate_values and "pid" in t.user_attrs:
                return int(t.user_attrs["pid"])
        return None

    wait_for(
        lambda: running_pid() is not None or run.poll() is not None,
        180,
        "a running trial's first epoch",
        every=0.2,
    )
    victim = running_pid()
    assert victim is not None, run.communicate()[0]
    killed = [
        t.number
        for t in load_study(open_storage(url), NAME).get_trials()
        if t.state == TrialState.RUNNING
    ]
    os.kill(victim, signal.SIGKILL)  # the worker dies mid-trial, as on an OOM kill
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out

    trials = load_study(open_storage(url), NAME).get_trials()
    dead = [t for t in trials if t.number in killed]
    assert dead and all(t.state == TrialState.FAIL for t in dead)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") in killed]
    assert retries and all(t.state == TrialState.COMPLETE for t in retries)
    # The live table's last frame: the one worker slot exited cleanly after one restart.
    assert any(
        line.split()[-3:] == ["exited", "(0)", "1"] for line in out.splitlines() if line.strip()
    ), out


@pytest.mark.postgres
def test_sigterm_to_run_stops_every_worker_and_leaves_the_trial_resumable(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec = write_spec(
        budget={"n_trials": 2},
        epochs=12,  # long enough a trial for the signal to land mid-way
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        pruner={"name": "none"},
    )
    env = worker_env(pg_url, tmp_path)
    args = ["run", study_name, "--spec", str(spec), "--workers", "1", "--storage", pg_url]
    run = subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: set[int] = set()
    try:

        def running() -> list[int]:
            try:
                study = load_study(open_storage(pg_url), study_name)
            except Exception:
                return []
            got = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return [int(t.user_attrs["pid"]) for t in got if t.intermediate_values]

        pids |= set(
            wait_for(lambda: running() or run.poll() is not None, 180, "a first epoch") or []
        )
        assert run.poll() is None and pids, run.communicate()[0]
        run.send_signal(signal.SIGTERM)  # a scheduler's preemption, `docker stop`, `kill`
        out, _ = run.communicate(timeout=180)
        assert run.returncode == 130, out
        assert "resume with" in out
        for pid in pids:  # the worker was stopped and reaped, not left behind
            assert not Path(f"/proc/{pid}").exists(), out
        trials = load_study(open_storage(pg_url), study_name).get_trials()
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        (stopped,) = [t for t in trials if t.state == TrialState.FAIL]
        assert stopped.user_attrs["fail_reason"].startswith("interrupted")
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        assert [t.system_attrs["failed_trial"] for t in waiting] == [stopped.number]
    finally:
        if run.poll() is None:
            run.kill()
        for pid in pids:  # a broken stop must not leave a worker training in the suite
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
