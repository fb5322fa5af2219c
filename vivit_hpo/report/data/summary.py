"""The study summary: counts by status, GPU and CPU hours, the budget used, the best trial,
and the best ViViT beside each yardstick.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from vivit_hpo.report.snapshot import STATUSES, StudySnapshot, trial_status, trial_value
from vivit_hpo.search.record import (
    BEST_EPOCH,
    BINS_PER_S,
    DEVICE,
    EPOCHS_RUN,
    FLOPS_PER_SAMPLE,
    HOST,
    PARAMS_COUNT,
    PEAK_MEMORY_MB,
    SAMPLES_PER_S,
    TEST_BPS,
    TEST_CORR,
    TRIAL_DIR,
    TrialRecord,
)
from vivit_hpo.search.study import Standing

__all__ = [
    "BudgetItem",
    "SummaryInfo",
    "standings_info",
    "summary_info",
    "trial_hours",
]


def _best_attrs(r: TrialRecord, metric: str = "BPS", *, corr: bool = False) -> dict[str, Any]:
    """What the best trial recorded that is worth showing next to it, by attribute name (the
    Poisson test score by its name ``metric`` when it is no BPS: calcium traces; led by the
    test correlation for those, or with ``corr``: a study that maximises it)."""
    scores: dict[str, Any] = {TEST_CORR: r.test_corr} if corr or metric != "BPS" else {}
    scores[TEST_BPS if metric == "BPS" else f"test {metric}"] = r.test_bps
    shown = {
        **scores,
        PARAMS_COUNT: r.params_count,
        FLOPS_PER_SAMPLE: r.flops_per_sample,
        SAMPLES_PER_S: r.samples_per_s,
        BINS_PER_S: r.bins_per_s,
        PEAK_MEMORY_MB: r.peak_memory_mb,
        BEST_EPOCH: r.best_epoch,
        EPOCHS_RUN: r.epochs_run,
        DEVICE: r.device,
        HOST: r.host,
        TRIAL_DIR: None if r.run_dir is None else str(r.run_dir),
    }
    return {k: v for k, v in shown.items() if v is not None}


@dataclass(frozen=True)
class BudgetItem:
    """One budget of the spec and how much of it the study has used."""

    label: str
    used: float
    limit: float | None
    unit: str


@dataclass(frozen=True)
class SummaryInfo:
    """The study summary: counts, hours, budget and the best trial.

    ``hours`` maps ``"gpu"``, ``"cpu"`` and ``"unknown"`` (no ``device`` attribute) to the summed
    trial durations in hours; a running trial counts up to the snapshot time.
    """

    name: str
    direction: str
    num_trials: int
    counts: dict[str, int]
    hours: dict[str, float]
    budget: tuple[BudgetItem, ...]
    spec_text: str | None
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_attrs: dict[str, Any]
    best_config_text: str | None
    oracle_mean: float | None
    best_corr: float | None = None  # the best trial's validation correlation (val_corr)
    best_poisson: float | None = None  # the best trial's validation BPS (val_bps)
    objective: str = "bps"  # what the study maximised (:attr:`StudySnapshot.objective_name`)
    poisson_metric: str = "BPS"  # the Poisson score's name (:attr:`StudySnapshot.poisson_metric`)
    metric: str = "BPS"  # the objective's name (:attr:`StudySnapshot.metric`)


def trial_hours(trial: FrozenTrial, now: datetime) -> float:
    """Hours between the trial's start and completion (or ``now`` while it runs); 0 if unstarted."""
    if trial.datetime_start is None:
        return 0.0
    end = trial.datetime_complete or now
    return max((end - trial.datetime_start).total_seconds(), 0.0) / 3600.0


def _device_kind(trial: FrozenTrial) -> str:
    device = (TrialRecord.of(trial).device or "").lower()
    if device.startswith("cuda"):
        return "gpu"
    if device.startswith("cpu"):
        return "cpu"
    return "unknown"


def _budget_items(spec: Mapping[str, Any], snap: StudySnapshot) -> tuple[BudgetItem, ...]:
    """Trials finished against ``budget.n_trials``, wall clock against ``budget.timeout_minutes``.

    The spec's timeout applies to each worker process, so it bounds the study's wall clock only
    when the workers start together; it is shown as the limit all the same.
    """
    budget = spec.get("budget")
    budget = budget if isinstance(budget, dict) else {}
    finished = sum(trial_status(t) not in ("running", "waiting") for t in snap.trials)
    # The search stores the effective count (a grid may hold fewer points than the spec asks).
    n_trials = snap.user_attrs.get("n_trials", budget.get("n_trials"))
    items = [
        BudgetItem(
            "trials finished",
            float(finished),
            float(n_trials) if isinstance(n_trials, int | float) else None,
            "trials",
        )
    ]
    starts = [t.datetime_start for t in snap.trials if t.datetime_start is not None]
    if starts:
        ends = [t.datetime_complete or snap.taken_at for t in snap.trials if t.datetime_start]
        wall = (max(ends) - min(starts)).total_seconds() / 3600.0
        minutes = budget.get("timeout_minutes")
        limit = float(minutes) / 60.0 if isinstance(minutes, int | float) else None
        items.append(BudgetItem("wall clock, first start to last end", wall, limit, "h"))
    return tuple(items)


def standings_info(snap: StudySnapshot) -> list[Standing]:
    """The best ViViT beside each yardstick (the spec's ``baselines``) on the test split, with
    the fraction of the test oracle where the data are simulated; empty without yardsticks."""
    from vivit_hpo.search.study import standings

    oracle = snap.oracle_test
    mean = float(np.mean(list(oracle.values()))) if oracle else None
    return standings(snap.trials, mean, maximize=snap.maximize)


def summary_info(snap: StudySnapshot, best_config_text: str | None = None) -> SummaryInfo:
    """Counts by status, GPU/CPU hours, budget used and the best trial of ``snap``.

    Args:
        snap: the study.
        best_config_text: the best trial's resolved run config (YAML), when its run dir has one.
    """
    counts = Counter(trial_status(t) for t in snap.trials)
    hours: dict[str, float] = defaultdict(float)
    for t in snap.trials:
        hours[_device_kind(t)] += trial_hours(t, snap.taken_at)
    best = snap.best_trial()
    oracle = snap.oracle_per_session()
    return SummaryInfo(
        name=snap.name,
        direction=snap.direction,
        num_trials=len(snap.trials),
        counts={s: counts.get(s, 0) for s in STATUSES},
        hours={k: hours.get(k, 0.0) for k in ("gpu", "cpu", "unknown")},
        budget=_budget_items(snap.spec(), snap),
        spec_text=snap.spec_text,
        best_number=None if best is None else best.number,
        best_value=None if best is None else trial_value(best),
        best_params={} if best is None else dict(best.params),
        best_attrs=(
            {}
            if best is None
            else _best_attrs(
                TrialRecord.of(best), snap.poisson_metric, corr=snap.objective_name == "corr"
            )
        ),
        best_config_text=best_config_text,
        # The oracle is a BPS: no yardstick for a correlation.
        oracle_mean=(
            float(np.mean(list(oracle.values())))
            if oracle and snap.objective_name == "bps"
            else None
        ),
        best_corr=None if best is None else TrialRecord.of(best).val_corr,
        best_poisson=None if best is None else TrialRecord.of(best).val_bps,
        metric=snap.metric,
        objective=snap.objective_name,
        poisson_metric=snap.poisson_metric,
    )
