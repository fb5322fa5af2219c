"""A trial's record: what the study commands read a trial as (:class:`TrialRecord`, on trials
made as the objective writes them and on a real study's), and what a retry carries (its
reports, never the pruner's rung state of the trial it replaces), on real PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from vivit_hpo.config import RunConfig
from vivit_hpo.search import record
from vivit_hpo.search.record import (
    BASELINE,
    BEST_EPOCH,
    BINS_PER_S,
    DEVICE,
    EPOCHS_RUN,
    FAIL_REASON,
    FLOPS_PER_SAMPLE,
    HOST,
    INFEASIBLE_REASON,
    PARAMS_COUNT,
    PEAK_MEMORY_MB,
    PID,
    PRUNE_REASON,
    RESPONSE_KINDS,
    RUN_CONFIG,
    SAMPLES_PER_S,
    STOPPED_EARLY,
    TEST_BPS,
    TEST_BPS_PER_SESSION,
    TEST_CORR,
    TRIAL_DIR,
    VAL_BPS_PER_SESSION,
    VAL_CORR,
    VALUES,
    RetryStaleTrial,
    TrialRecord,
    retry_of,
    status,
)
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import (
    create_study,
    enqueue,
    load_study,
    study_uid,
    trial_dir,
    trial_rows,
)
from vivit_hpo.search.worker import run_worker

pytestmark = pytest.mark.postgres


def _hyperband_study(pg_url: str, name: str) -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=open_storage(pg_url),
        direction="maximize",
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3),
    )


def test_a_retry_keeps_the_reports_and_drops_the_rungs(pg_url: str, study_name: str) -> None:
    study = _hyperband_study(pg_url, study_name)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    # To the max resource: whichever bracket the study's name puts the trial in (its first rung
    # may be at 1, 3 or 9), it completes a rung.
    for epoch in range(1, 10):
        trial.report(0.1 * epoch, epoch)
        trial.should_prune()  # Hyperband records the rungs this trial completed
    trial.set_user_attr("prune_reason", "pruned after epoch 3")
    trial.set_user_attr("run_config", {"train": {"lr": 1e-3}})
    frozen = study._storage.get_trial(trial._trial_id)
    assert any(k.startswith("completed_rung_") for k in frozen.system_attrs), frozen.system_attrs

    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    RetryStaleTrial(max_retry=1)(study, study._storage.get_trial(trial._trial_id))
    (copy,) = study.get_trials(states=(TrialState.WAITING,))
    assert copy.params == frozen.params
    assert copy.intermediate_values == pytest.approx({e: 0.1 * e for e in range(1, 10)})
    assert not [k for k in copy.system_attrs if k.startswith("completed_rung_")]
    assert copy.system_attrs["retry_history"] == [trial.number]
    assert "prune_reason" not in copy.user_attrs and "run_config" in copy.user_attrs

    # Out of retries: a second failure of the copy enqueues nothing.
    again = study.ask()
    assert again.number == copy.number
    study._storage.set_trial_state_values(again._trial_id, state=TrialState.FAIL)
    RetryStaleTrial(max_retry=1)(study, study._storage.get_trial(again._trial_id))
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_status_reads_the_objectives_record() -> None:
    def made(state: TrialState, **attrs: object) -> optuna.trial.FrozenTrial:
        value = 0.1 if state == TrialState.COMPLETE else None
        t = optuna.create_trial(state=state, value=value, user_attrs=dict(attrs))
        return t

    assert status(made(TrialState.COMPLETE)) == "complete"
    assert status(made(TrialState.PRUNED, prune_reason="x")) == "pruned"
    assert status(made(TrialState.PRUNED, infeasible_reason="x")) == "infeasible"
    assert status(made(TrialState.PRUNED, fail_reason="out of memory")) == "failed"
    assert status(made(TrialState.FAIL)) == "failed"
    assert status(made(TrialState.WAITING)) == "waiting"
    assert status(retry_of(made(TrialState.PRUNED, fail_reason="x"))) == "waiting"


# Every attribute name the record knows (the objective must write no other).
KNOWN_ATTRS = {getattr(record, n) for n in record.__all__ if n.isupper()}

_DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 1e-2, log=True),
    "patch": CategoricalDistribution([2, 4]),
}


def _written(run_dir: Path) -> dict[str, Any]:
    """The user attributes the objective writes for a trial that trains to the end."""
    return {
        HOST: "node-1",
        DEVICE: "cuda:0 (NVIDIA H200)",
        PID: 4242,
        VALUES: {"lr": 3e-3, "patch": 2, "heads": 2},  # heads: fixed in the space
        RUN_CONFIG: {"train": {"lr": 3e-3}},
        TRIAL_DIR: str(run_dir),
        PARAMS_COUNT: 12_345,
        FLOPS_PER_SAMPLE: 6.5e7,
        SAMPLES_PER_S: 812.5,
        BINS_PER_S: 9000.0,
        PEAK_MEMORY_MB: 512.0,
        EPOCHS_RUN: 3,
        BEST_EPOCH: 2,
        VAL_BPS_PER_SESSION: {"s0": 0.2, "s1": 0.4},
        VAL_CORR: 0.31,
        RESPONSE_KINDS: {"s0": "spikes", "s1": "calcium"},
        STOPPED_EARLY: False,
        TEST_BPS: 0.25,
        TEST_BPS_PER_SESSION: {"s0": 0.2, "s1": 0.3},
        TEST_CORR: 0.27,
    }


def test_the_record_of_a_complete_trial(tmp_path: Path) -> None:
    t = optuna.create_trial(
        value=0.3,
        params={"lr": 3e-3, "patch": 2},
        distributions=_DISTRIBUTIONS,
        user_attrs={**_written(tmp_path / "trial-7"), BASELINE: True},
        intermediate_values={1: 0.1, 2: 0.3, 3: 0.28},
        constraints={"feasible": 0.0},
    )
    assert set(t.user_attrs) <= KNOWN_ATTRS
    assert TrialRecord.of(t) == TrialRecord(
        number=t.number,
        status="complete",
        value=0.3,
        params={"lr": 3e-3, "patch": 2, "heads": 2},
        values={"lr": 3e-3, "patch": 2, "heads": 2},
        reason=None,
        fail_reason=None,
        epochs=3,
        epochs_run=3,
        best_epoch=2,
        val_bps_per_session={"s0": 0.2, "s1": 0.4},
        test_bps=0.25,
        test_bps_per_session={"s0": 0.2, "s1": 0.3},
        test_bps_error=None,
        run_dir=tmp_path / "trial-7",
        run_config={"train": {"lr": 3e-3}},
        baseline=True,
        host="node-1",
        device="cuda:0 (NVIDIA H200)",
        params_count=12_345,
        flops_per_sample=6.5e7,
        samples_per_s=812.5,
        bins_per_s=9000.0,
        peak_memory_mb=512.0,
        resumed_from_trial=None,
        resumed_from_epoch=None,
        failed_trial=None,
        retry_history=(),
        yardstick=None,
        seconds=TrialRecord.of(t).seconds,
        val_corr=0.31,
        test_corr=0.27,
        response_kinds={"s0": "spikes", "s1": "calcium"},
    )


def test_the_record_of_trials_that_did_not_complete(tmp_path: Path) -> None:
    def made(state: TrialState, **attrs: Any) -> TrialRecord:
        return TrialRecord.of(
            optuna.create_trial(
                state=state,
                # Optuna gives a pruned trial its last report as its value: not a result.
                value=0.1 if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
                params={"lr": 3e-3},
                distributions={"lr": _DISTRIBUTIONS["lr"]},
                user_attrs=attrs,
                intermediate_values={1: 0.05, 2: 0.1} if attrs.get(EPOCHS_RUN) else {},
            )
        )

    trained = _written(tmp_path)
    pruned = made(TrialState.PRUNED, **trained, **{PRUNE_REASON: "pruned after epoch 2"})
    assert (pruned.status, pruned.value, pruned.epochs) == ("pruned", None, 2)
    assert pruned.reason == "pruned after epoch 2" and pruned.test_bps == 0.25

    # Refused before training: no folder, no epochs; ``values`` is {} when sampling refused it.
    infeasible = made(TrialState.PRUNED, **{VALUES: {}, INFEASIBLE_REASON: "too long"})
    assert (infeasible.status, infeasible.reason, infeasible.epochs) == (
        "infeasible",
        "too long",
        0,
    )
    assert infeasible.params == {"lr": 3e-3} and infeasible.values == {}
    assert infeasible.run_dir is None and infeasible.best_epoch is None

    failed = made(TrialState.FAIL, **{FAIL_REASON: "RuntimeError: boom", PRUNE_REASON: "stale"})
    assert (failed.status, failed.reason) == ("failed", "RuntimeError: boom")
    assert failed.fail_reason == "RuntimeError: boom" and pruned.fail_reason is None

    # A trial with none of the objective's attributes (another tool's study, or still waiting).
    bare = made(TrialState.WAITING)
    assert (bare.status, bare.reason, bare.value, bare.values) == ("waiting", None, None, None)
    assert bare.params == {"lr": 3e-3} and bare.run_dir is None and bare.baseline is False
    assert bare.val_bps_per_session is None and bare.retry_history == ()


def test_the_record_reads_old_names_and_skips_values_of_another_type() -> None:
    t = optuna.create_trial(
        value=0.3,
        user_attrs={
            "n_params": 5000.0,  # the names studies of earlier versions used
            "run_dir": "/runs/old",
            TEST_BPS: "n/a",
            BEST_EPOCH: 4.0,
            VAL_BPS_PER_SESSION: {"s0": 0.2, "s1": None},
            DEVICE: None,
            BASELINE: 1,
        },
    )
    r = TrialRecord.of(t)
    assert (r.params_count, r.run_dir) == (5000, Path("/runs/old"))
    assert (r.test_bps, r.best_epoch, r.device, r.baseline) == (None, 4, None, True)
    assert r.val_bps_per_session == {"s0": 0.2}
    # The current name wins over the old one.
    both = optuna.create_trial(value=0.3, user_attrs={PARAMS_COUNT: 7, "n_params": 5})
    assert TrialRecord.of(both).params_count == 7


def test_the_record_of_a_retry_names_the_trials_it_replaces() -> None:
    first = optuna.create_trial(
        state=TrialState.FAIL, user_attrs={FAIL_REASON: "interrupted", TRIAL_DIR: "/t/trial-3"}
    )
    first.number = 3
    copy = retry_of(first)
    copy.number = 5
    r = TrialRecord.of(copy)
    assert (r.status, r.reason, r.failed_trial, r.retry_history) == ("waiting", None, 3, (3,))
    assert r.run_dir == Path("/t/trial-3")  # the retry takes over its predecessor's folder
    assert TrialRecord.of(retry_of(copy)).retry_history == (3, 5)

    # ``study show``: a failure's row says why it failed, not what was written before its
    # worker was lost.
    lost = optuna.create_trial(state=TrialState.FAIL, user_attrs={PRUNE_REASON: "pruned at 2"})
    lost.number = 6
    again = retry_of(lost)
    again.number = 7
    rows = trial_rows([first, copy, lost, again])
    assert [r.state for r in rows] == ["RETRIED", "WAITING", "RETRIED", "WAITING"]
    assert [r.reason for r in rows] == [
        "interrupted; retried as #5",
        "",
        "worker lost (no heartbeat); retried as #7",
        "",
    ]


def test_the_records_of_a_real_study(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    """What the objective wrote, read back from PostgreSQL: one config trains to the end, an
    infeasible one is refused before training."""
    spec_path = write_spec(budget={"n_trials": 2}, epochs=2, pruner={"name": "none"})
    spec = load_spec(spec_path)
    storage = open_storage(pg_url)
    create_study(storage, study_name, spec)
    study = load_study(storage, study_name)
    enqueue(study, spec, ["patch=2", "stride=2", "embed_dim=16", "heads=2", "lr=3e-3"])
    enqueue(study, spec, ["patch=8", "stride=8", "embed_dim=16", "heads=2", "lr=1e-3"])
    assert run_worker(study_name, pg_url, 2, "cpu", install_signals=False).trials == 2

    trials = study.get_trials()
    for t in trials:
        assert set(t.user_attrs) <= KNOWN_ATTRS, set(t.user_attrs) - KNOWN_ATTRS
    done, refused = (TrialRecord.of(t) for t in trials)

    assert (done.number, done.status, done.value) == (0, "complete", trials[0].value)
    assert not done.baseline and done.reason is None
    assert set(done.params) == set(spec.space) and done.values == done.params
    assert done.epochs == done.epochs_run == 2 and done.best_epoch in (1, 2)
    assert done.run_dir == trial_dir(spec, study_name, 0, uid=study_uid(study))
    assert done.run_dir.is_dir()
    assert done.run_config is not None
    assert RunConfig.model_validate(done.run_config).train.epochs == 2
    assert (done.host, done.device) == (socket.gethostname(), "cpu")
    assert isinstance(done.params_count, int) and done.params_count > 0
    assert done.flops_per_sample and done.samples_per_s and done.peak_memory_mb is not None
    assert done.val_bps_per_session and done.test_bps_per_session
    assert done.response_kinds == dict.fromkeys(done.val_bps_per_session, "spikes")
    assert done.val_corr is not None and -1 <= done.val_corr <= 1
    assert done.test_corr is not None and -1 <= done.test_corr <= 1
    assert set(done.val_bps_per_session) == set(done.test_bps_per_session)
    assert done.test_bps == pytest.approx(
        sum(done.test_bps_per_session.values()) / len(done.test_bps_per_session)
    )

    assert (refused.number, refused.status, refused.value) == (1, "infeasible", None)
    assert refused.reason and "shorter than the tubelet" in refused.reason
    assert (refused.run_dir, refused.epochs, refused.best_epoch) == (None, 0, None)
    assert refused.device == "cpu" and not refused.baseline

    # ``study show`` reads the same record.
    rows = trial_rows(trials)
    assert [(r.value, r.test_value, r.best_epoch) for r in rows] == [
        (done.value, done.test_bps, done.best_epoch),
        (None, None, None),
    ]
    assert [r.reason for r in rows] == ["", refused.reason]
