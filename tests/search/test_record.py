"""A trial's record: what the study commands read a trial as, and what a retry carries (its
reports, never the pruner's rung state of the trial it replaces), on real PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from vivit_hpo.search.record import RetryStaleTrial, retry_of, status
from vivit_hpo.search.storage import open_storage

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
    for epoch in (1, 2, 3):
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
    assert copy.intermediate_values == {1: 0.1, 2: 0.2, 3: pytest.approx(0.3)}
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
