"""Figure data of the study sections, on studies with known trials (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from report_studies import T0, add_trial

from vivit_hpo.report.data import (
    ablation_info,
    baseline_info,
    cost_info,
    curves_info,
    history_info,
    importance_info,
    parallel_info,
    pareto_front,
    sessions_info,
    summary_info,
)
from vivit_hpo.report.sections import headline
from vivit_hpo.report.snapshot import StudySnapshot, take_snapshot, trial_status
from vivit_hpo.search.study import StudyError


def snapshot(study: optuna.Study) -> StudySnapshot:
    # The running trial started at T0 + 10 h: one hour of it has passed at T0 + 11 h.
    return StudySnapshot.from_study(study, taken_at=T0 + timedelta(hours=11))


def test_trial_status_marks_infeasible_by_reason_or_constraint(small_study: optuna.Study) -> None:
    statuses = [trial_status(t) for t in small_study.trials]
    assert statuses == [
        "complete",
        "complete",
        "complete",
        "complete",
        "pruned",
        "pruned",
        "complete",
        "failed",
        "infeasible",
        "running",
    ]
    t = optuna.trial.create_trial(value=1.0, constraints={"memory": 3.0})
    assert trial_status(t) == "infeasible"
    t = optuna.trial.create_trial(value=1.0, constraints={"memory": -1.0})
    assert trial_status(t) == "complete"


def test_summary_counts_hours_budget_and_best(small_study: optuna.Study) -> None:
    info = summary_info(snapshot(small_study), best_config_text="model: {}\n")
    assert info.num_trials == 10
    assert info.counts == {
        "complete": 5,
        "pruned": 2,
        "infeasible": 1,
        "failed": 1,
        "running": 1,
        "waiting": 0,
    }
    # cuda: trials 0, 1, 4, 5, 6 at 30 min; cpu: 2, 3, 7; unknown: infeasible (0) + running (1 h).
    assert info.hours["gpu"] == pytest.approx(2.5)
    assert info.hours["cpu"] == pytest.approx(1.5)
    assert info.hours["unknown"] == pytest.approx(1.0)
    trials, wall = info.budget
    assert (trials.used, trials.limit) == (9.0, 10.0)
    assert wall.used == pytest.approx(11.0) and wall.limit == pytest.approx(2.0)
    assert info.best_number == 6 and info.best_value == pytest.approx(0.35)
    assert info.best_params == {"embed_dim": 32, "lr": 2e-3}
    assert info.best_attrs["params_count"] == 5000 and info.best_attrs["device"] == "cuda:1"
    assert info.oracle_mean == pytest.approx(0.5)  # val of s0 (0.6) and s1 (0.4)
    assert info.best_config_text == "model: {}\n"
    assert "budget" in (info.spec_text or "")


def test_history_best_so_far(small_study: optuna.Study) -> None:
    info = history_info(snapshot(small_study))
    assert info.numbers == (0, 1, 2, 3, 6)
    assert info.values == pytest.approx((0.1, 0.3, 0.2, 0.25, 0.35))
    assert info.best_so_far == pytest.approx((0.1, 0.3, 0.3, 0.3, 0.35))


def test_history_minimize_keeps_the_lowest() -> None:
    study = optuna.create_study(direction="minimize")
    for v in (3.0, 1.0, 2.0):
        add_trial(study, TrialState.COMPLETE, value=v)
    info = history_info(StudySnapshot.from_study(study))
    assert info.best_so_far == (3.0, 1.0, 1.0) and not info.maximize


def test_curves_and_pruning_epochs(small_study: optuna.Study) -> None:
    info = curves_info(snapshot(small_study))
    assert [c.number for c in info.curves] == [0, 1, 2, 3, 4, 5, 6, 9]
    by = {c.number: c for c in info.curves}
    assert by[4].status == "pruned" and by[4].epochs == (1,)
    assert by[5].epochs == (1, 2) and by[5].values == pytest.approx((0.02, 0.03))
    assert by[9].status == "running"
    assert info.pruned_at == {1: 1, 2: 1}


def test_parallel_axes_encode_categories_and_log_ranges(small_study: optuna.Study) -> None:
    info = parallel_info(snapshot(small_study))
    assert [d.label for d in info.dims] == ["embed_dim", "lr (log10)"]
    cat, lr = info.dims
    assert cat.ticktext == ("16", "32") and cat.values == (0.0, 1.0, 0.0, 1.0, 1.0)
    assert lr.values == pytest.approx(tuple(math.log10(x) for x in (1e-3, 1e-3, 3e-3, 3e-4, 2e-3)))
    assert lr.ticktext == ("1e-4", "1e-3", "1e-2")
    assert info.objective is not None and info.objective.values[-1] == pytest.approx(0.35)
    assert info.numbers == (0, 1, 2, 3, 6) and info.omitted == ()


def test_parallel_omits_conditional_and_fixed_params() -> None:
    study = optuna.create_study(direction="maximize")
    dists = {
        "a": CategoricalDistribution([1, 2]),
        "b": CategoricalDistribution(["x"]),
        "c": CategoricalDistribution([5, 6]),
    }
    add_trial(study, TrialState.COMPLETE, value=1, params={"a": 1, "b": "x", "c": 5}, dists=dists)
    add_trial(study, TrialState.COMPLETE, value=2, params={"a": 2, "b": "x"}, dists=dists)
    info = parallel_info(StudySnapshot.from_study(study))
    assert [d.label for d in info.dims] == ["a"]
    assert set(info.omitted) == {"b", "c"}


def test_parallel_uses_the_search_space_values_when_recorded() -> None:
    # As the search records them: Optuna's per-condition parameter names, and "values" with
    # one entry per spec parameter.
    study = optuna.create_study(direction="maximize")
    space = {
        "patch": {"choices": [2, 4, 8], "to": "model.core.kernel_size"},
        "stride": {"choices": [2, 4, 8], "le": "patch", "to": "model.core.stride"},
        "lr": {"low": 1e-3, "high": 1e-1, "log": True, "to": "train.lr"},
    }
    study.set_user_attr("spec", yaml.safe_dump({"space": space}, sort_keys=False))
    dists = {
        "patch": CategoricalDistribution([2, 4, 8]),
        "stride|patch=4": CategoricalDistribution([2, 4]),
        "stride|patch=8": CategoricalDistribution([2, 4, 8]),
    }
    for i, (patch, stride, lr) in enumerate([(4, 2, 1e-3), (8, 8, 1e-2), (4, 4, 1e-1)]):
        add_trial(
            study,
            TrialState.COMPLETE,
            value=float(i),
            params={"patch": patch, f"stride|patch={patch}": stride},
            dists=dists,
            attrs={"values": {"lr": lr, "patch": patch, "stride": stride}},
        )
    info = parallel_info(StudySnapshot.from_study(study))
    assert [d.label for d in info.dims] == ["patch", "stride", "lr (log10)"]
    patch, stride, lr = info.dims
    assert patch.ticktext == ("2", "4", "8") and patch.values == (1.0, 2.0, 1.0)
    assert stride.values == (0.0, 2.0, 1.0)
    assert lr.values == pytest.approx((-3.0, -2.0, -1.0)) and lr.ticktext == (
        "1e-3",
        "1e-2",
        "1e-1",
    )


def test_importances_sum_to_one_over_the_varying_params(small_study: optuna.Study) -> None:
    info = importance_info(snapshot(small_study))
    assert set(info.importances) == {"embed_dim", "lr"}
    assert sum(info.importances.values()) == pytest.approx(1.0)
    assert list(info.importances.values()) == sorted(info.importances.values(), reverse=True)
    assert info.num_trials == 5 and info.evaluator == "PedAnovaImportanceEvaluator"
    assert not info.reliable and "treat these importances as rough" in (info.note or "")


def test_importances_find_the_parameter_that_matters() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.01 * t.suggest_float("y", 0, 1), 40)
    info = importance_info(StudySnapshot.from_study(study))
    assert list(info.importances) == ["x", "y"] and info.importances["x"] > 0.8
    assert info.reliable and info.note is None and not info.tied


def test_tied_importances_are_flagged() -> None:
    study = optuna.create_study(direction="maximize")
    dists = {"a": CategoricalDistribution([0, 1]), "b": CategoricalDistribution([0, 1])}
    for i, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        add_trial(study, TrialState.COMPLETE, value=float(i), params={"a": a, "b": b}, dists=dists)
    info = importance_info(StudySnapshot.from_study(study))
    # PED-ANOVA's top 10% of 4 trials is one trial: it splits the importance evenly.
    assert info.importances == {"a": 0.5, "b": 0.5} and info.tied and not info.reliable
    assert "4 complete trials cannot tell them apart yet" in (info.note or "")
    assert "importances: none yet (4 complete trials)" in headline(
        StudySnapshot.from_study(study), info
    )


def test_importances_with_too_few_trials_give_a_note_not_an_error() -> None:
    study = optuna.create_study(direction="maximize")
    info = importance_info(StudySnapshot.from_study(study))
    assert info.importances == {} and "only 0 complete" in (info.note or "")
    add_trial(study, TrialState.COMPLETE, value=1.0, params={"embed_dim": 16})
    info = importance_info(StudySnapshot.from_study(study))
    assert info.importances == {} and "only 1 complete" in (info.note or "")


def test_pareto_front_mask() -> None:
    costs = [1, 1, 4, 4, 5, 6]
    values = [0.1, 0.2, 0.3, 0.25, 0.35, 0.35]
    front = pareto_front(costs, values, cost_lower_better=True, maximize=True)
    assert front.tolist() == [False, True, True, False, True, False]
    # Throughput: higher is better on both axes.
    front = pareto_front([10, 5, 1], [0.1, 0.2, 0.3], cost_lower_better=False, maximize=True)
    assert front.tolist() == [True, True, True]
    front = pareto_front([10, 5, 1], [0.3, 0.2, 0.1], cost_lower_better=False, maximize=True)
    assert front.tolist() == [True, False, False]


def test_cost_panels_mark_the_front(small_study: optuna.Study) -> None:
    info = cost_info(snapshot(small_study))
    assert [p.attr for p in info.panels] == ["params_count", "flops_per_sample", "samples_per_s"]
    for p in info.panels:
        assert p.numbers == (0, 1, 2, 3, 6)
        front = {n for n, f in zip(p.numbers, p.on_front, strict=True) if f}
        assert front == {1, 2, 6}  # 0 is beaten by 2 (same cost), 3 by 1
    assert not info.panels[0].log_x  # 1000..5000 spans less than 20x


def test_sessions_of_top_trials_with_oracle(small_study: optuna.Study) -> None:
    info = sessions_info(snapshot(small_study), top=3)
    assert info.numbers == (6, 1, 3)
    assert info.sessions == ("s0", "s1")
    assert np.allclose(info.bps, [[0.40, 0.30], [0.35, 0.25], [0.30, 0.20]])
    assert info.oracle == (0.6, 0.4)


def test_not_a_grid_gives_no_ablation(small_study: optuna.Study) -> None:
    assert ablation_info(snapshot(small_study)) is None


def _grid_study(storage: str | None = None) -> optuna.Study:
    space = {"a": [0, 1], "b": ["x", "y"], "seed": [0, 1]}
    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=optuna.samplers.GridSampler(space, seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_categorical("a", [0, 1])
        b = trial.suggest_categorical("b", ["x", "y"])
        seed = trial.suggest_categorical("seed", [0, 1])
        return a + 0.5 * (b == "y") + 0.1 * seed + 0.01 * a * seed

    study.optimize(objective, n_trials=8)
    return study


def test_ablation_effects_with_spread_over_seeds() -> None:
    info = ablation_info(StudySnapshot.from_study(_grid_study()))
    assert info is not None
    assert info.factors == ("a", "b") and info.seed_param == "seed"
    rows = {(r.factor, r.level): r for r in info.rows}
    # a=0: seed 0 -> mean(0, .5) = .25, seed 1 -> .35; a=1: 1.25 and 1.36.
    assert rows[("a", "0")].mean == pytest.approx(0.30)
    assert rows[("a", "0")].std == pytest.approx(np.std([0.25, 0.35], ddof=1))
    assert rows[("a", "1")].mean == pytest.approx(1.305)
    assert rows[("a", "1")].std == pytest.approx(np.std([1.25, 1.36], ddof=1))
    assert rows[("a", "0")].delta == pytest.approx(-1.005) and rows[("a", "1")].delta == 0.0
    assert rows[("b", "y")].mean - rows[("b", "x")].mean == pytest.approx(0.5)
    assert rows[("a", "0")].num_trials == 4 and rows[("a", "0")].num_seeds == 2
    assert info.num_complete == 8 and info.num_excluded == 0


def test_ablation_is_recognised_from_the_spec_sampler() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spec", yaml.safe_dump({"sampler": {"name": "grid"}}))
    dists = {"a": CategoricalDistribution([0, 1])}
    for a in (0, 1, 0, 1):
        add_trial(study, TrialState.COMPLETE, value=float(a), params={"a": a}, dists=dists)
    info = ablation_info(StudySnapshot.from_study(study))
    assert info is not None and info.seed_param is None
    assert [r.std for r in info.rows] == [0.0, 0.0]  # spread over the trials themselves


def _kind_study(kinds: list[str], spec: dict | None = None) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    if spec is not None:
        study.set_user_attr("spec", yaml.safe_dump(spec))
    dists = {"core": CategoricalDistribution(["vivit", "cnn"])}
    for i, k in enumerate(kinds):
        add_trial(
            study,
            TrialState.COMPLETE,
            value=0.1 * (i + 1),
            params={"core": k},
            dists=dists,
            attrs={"n_params": 100 * (i + 1)},
        )
    return study


def test_baseline_groups_by_the_core_kind_parameter() -> None:
    spec = {"space": {"core": {"choices": ["vivit", "cnn"], "to": "model.core.kind"}}}
    info = baseline_info(StudySnapshot.from_study(_kind_study(["vivit", "cnn", "vivit"], spec)))
    assert info is not None
    groups = {g.label: g for g in info.groups}
    assert set(groups) == {"vivit", "cnn"}
    assert groups["vivit"].numbers == (0, 2) and groups["vivit"].best_number == 2
    assert groups["cnn"].values == pytest.approx((0.2,))
    assert groups["cnn"].n_params == (200.0,)


def test_baseline_from_a_second_study() -> None:
    main = StudySnapshot.from_study(_kind_study(["vivit", "vivit"]))
    assert baseline_info(main) is None  # one family only
    cnn = optuna.create_study(direction="maximize", study_name="cnn-baselines")
    cnn.set_user_attr(
        "spec", yaml.safe_dump({"base": {"config": {"model": {"core": {"kind": "cnn"}}}}})
    )
    add_trial(cnn, TrialState.COMPLETE, value=0.05)
    info = baseline_info(main, StudySnapshot.from_study(cnn))
    assert info is not None
    assert [g.label for g in info.groups] == ["vivit", "cnn-baselines (cnn)"]
    assert info.groups[1].best_value == pytest.approx(0.05)


def test_unknown_study_is_a_one_line_study_error(sqlite_url: str, small_study) -> None:
    with pytest.raises(StudyError, match=r"study 'nope' does not exist \(studies: small\)"):
        take_snapshot(sqlite_url, "nope")


@pytest.mark.postgres
def test_figure_data_from_postgresql(pg_study) -> None:
    url, study = pg_study
    from vivit_hpo.search.storage import open_storage

    snap = take_snapshot(open_storage(url), study.study_name)
    assert len(snap.trials) == 10
    assert summary_info(snap).counts["pruned"] == 2
    assert curves_info(snap).pruned_at == {1: 1, 2: 1}
    assert sessions_info(snap).numbers[0] == 6
    assert history_info(snap).best_so_far[-1] == pytest.approx(0.35)
