"""The data of every study-level figure, computed by pure functions of a :class:`StudySnapshot`.

Each ``*_info`` function takes a snapshot (and plain values) and returns a frozen dataclass that
:mod:`vivit_hpo.report.figures` draws; nothing here touches the database, the disk or plotly
(optuna's ``visualization/_intermediate_values.py`` split: ``_get_*_info`` then ``_get_*_plot``).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from vivit_hpo.report.snapshot import (
    STATUSES,
    StudySnapshot,
    objective,
    trial_status,
    trial_value,
)
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
    "AblationInfo",
    "AblationRow",
    "BaselineGroup",
    "BaselineInfo",
    "BudgetItem",
    "CostInfo",
    "CostPanel",
    "Curve",
    "CurvesInfo",
    "HistoryInfo",
    "ImportanceInfo",
    "ParallelDim",
    "ParallelInfo",
    "SessionsInfo",
    "SummaryInfo",
    "ablation_info",
    "baseline_info",
    "cost_info",
    "curves_info",
    "history_info",
    "importance_info",
    "is_seed_param",
    "parallel_info",
    "pareto_front",
    "sessions_info",
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


# --------------------------------------------------------------------------------------------
# Summary


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


# --------------------------------------------------------------------------------------------
# Optimisation history and learning curves


@dataclass(frozen=True)
class HistoryInfo:
    """Objective value of each complete trial and the best value so far, by trial number."""

    numbers: tuple[int, ...]
    values: tuple[float, ...]
    best_so_far: tuple[float, ...]
    maximize: bool


def history_info(snap: StudySnapshot) -> HistoryInfo:
    """The optimisation history of ``snap``'s complete (feasible) trials."""
    done = snap.feasible_complete()
    values = [objective(t) for t in done]
    best: list[float] = []
    for v in values:
        if not best:
            best.append(v)
        else:
            best.append(max(best[-1], v) if snap.maximize else min(best[-1], v))
    return HistoryInfo(
        numbers=tuple(t.number for t in done),
        values=tuple(values),
        best_so_far=tuple(best),
        maximize=snap.maximize,
    )


@dataclass(frozen=True)
class Curve:
    """One trial's intermediate values: the best validation objective so far, per epoch."""

    number: int
    status: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class CurvesInfo:
    """Every trial's learning curve, and where the pruner stopped trials.

    ``pruned_at`` maps the last reported epoch of each pruned trial to how many trials stopped
    there (sorted by epoch).
    """

    curves: tuple[Curve, ...]
    pruned_at: dict[int, int]


def curves_info(snap: StudySnapshot) -> CurvesInfo:
    """Learning curves of every trial that reported at least one intermediate value."""
    curves = []
    pruned_at: Counter[int] = Counter()
    for t in snap.trials:
        steps = sorted(s for s, v in t.intermediate_values.items() if math.isfinite(v))
        if not steps:
            continue
        status = trial_status(t)
        curves.append(
            Curve(
                number=t.number,
                status=status,
                epochs=tuple(int(s) for s in steps),
                values=tuple(float(t.intermediate_values[s]) for s in steps),
            )
        )
        if status == "pruned":
            pruned_at[int(steps[-1])] += 1
    return CurvesInfo(curves=tuple(curves), pruned_at=dict(sorted(pruned_at.items())))


# --------------------------------------------------------------------------------------------
# Parallel coordinates and importances


@dataclass(frozen=True)
class ParallelDim:
    """One axis of the parallel-coordinates plot.

    ``values`` are numbers to plot (category indices for categorical parameters, log10 for
    log-scaled ones); ``ticktext`` labels ``tickvals`` when they are not the plain numbers.
    """

    label: str
    values: tuple[float, ...]
    tickvals: tuple[float, ...] | None = None
    ticktext: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ParallelInfo:
    """Axes for the complete trials (the objective last) and the parameters left out."""

    dims: tuple[ParallelDim, ...]
    objective: ParallelDim | None
    numbers: tuple[int, ...]
    omitted: tuple[str, ...]  # conditional (absent in some trials) or fixed parameters


def _category_dim(label: str, raw: Sequence[Any], choices: Sequence[Any]) -> ParallelDim:
    # Categories in the given order, values that compare across trials as their text.
    def key(v: Any) -> str:
        return v if isinstance(v, str) else repr(v)

    order = [key(c) for c in choices]
    order += sorted({key(v) for v in raw} - set(order))
    index = {c: i for i, c in enumerate(order)}
    return ParallelDim(
        label=label,
        values=tuple(float(index[key(v)]) for v in raw),
        tickvals=tuple(float(i) for i in range(len(order))),
        ticktext=tuple(order),
    )


def _log_dim(label: str, raw: Sequence[Any], low: float, high: float) -> ParallelDim:
    lo, hi = math.log10(low), math.log10(high)
    ticks = [float(x) for x in range(math.floor(lo), math.ceil(hi) + 1)]
    return ParallelDim(
        label=f"{label} (log10)",
        values=tuple(math.log10(float(v)) for v in raw),
        tickvals=tuple(ticks),
        ticktext=tuple(f"1e{int(x)}" for x in ticks),
    )


def _param_dim(name: str, trials: Sequence[FrozenTrial]) -> ParallelDim:
    """An axis for Optuna parameter ``name``, shaped by its distribution."""
    dist = trials[0].distributions[name]
    raw = [t.params[name] for t in trials]
    if isinstance(dist, CategoricalDistribution):
        return _category_dim(name, raw, dist.choices)
    if isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
        return _log_dim(name, raw, dist.low, dist.high)
    return ParallelDim(label=name, values=tuple(float(v) for v in raw))


def _value_dim(name: str, raw: Sequence[Any], spec: Mapping[str, Any]) -> ParallelDim:
    """An axis for search-space value ``name`` (the ``values`` attribute), shaped by the spec."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if isinstance(spec.get("choices"), list) or not numeric:
        return _category_dim(name, raw, spec.get("choices") or [])
    if spec.get("log") and all(float(v) > 0 for v in raw):
        return _log_dim(
            name, raw, float(spec.get("low") or min(raw)), float(spec.get("high") or max(raw))
        )
    return ParallelDim(label=name, values=tuple(float(v) for v in raw))


def parallel_info(snap: StudySnapshot) -> ParallelInfo:
    """Parallel-coordinate axes over the complete trials' parameters and objective.

    When every complete trial records the search-space values it was built from (user
    attribute ``values``, one entry per spec parameter, whatever Optuna parameter sampled it),
    the axes are those, in the spec's order; else Optuna's parameters. Parameters that some
    complete trials lack (conditional ones) or that never vary are left out and listed in
    ``omitted``.
    """
    done = snap.feasible_complete()
    space = _spec_space(snap.spec())
    values = [v for t in done if (v := TrialRecord.of(t).values) is not None]
    use_values = bool(done) and len(values) == len(done)
    rows = values if use_values else [t.params for t in done]
    names = sorted({p for r in rows for p in r})
    if use_values:
        names.sort(key=lambda n: list(space).index(n) if n in space else len(space))
    dims, omitted = [], []
    for name in names:
        if any(name not in r for r in rows) or len({repr(r[name]) for r in rows}) < 2:
            omitted.append(name)
            continue
        raw = [r[name] for r in rows]
        dims.append(
            _value_dim(name, raw, space.get(name, {})) if use_values else _param_dim(name, done)
        )
    obj_dim = (
        ParallelDim(label="objective", values=tuple(objective(t) for t in done)) if done else None
    )
    return ParallelInfo(
        dims=tuple(dims),
        objective=obj_dim,
        numbers=tuple(t.number for t in done),
        omitted=tuple(omitted),
    )


@dataclass(frozen=True)
class ImportanceInfo:
    """Hyperparameter importances (sum to 1), most important first, and how far to trust them.

    ``reliable`` is False when there are fewer than :data:`RELIABLE_IMPORTANCE_TRIALS` complete
    trials, when the evaluator warned, or when every parameter came out equal; ``note`` says
    which (and why importances are absent, when they are).
    """

    importances: dict[str, float]
    evaluator: str
    num_trials: int
    note: str | None
    reliable: bool = False

    @property
    def tied(self) -> bool:
        """All parameters equally important: the evaluator could not tell them apart."""
        v = list(self.importances.values())
        return len(v) > 1 and max(v) - min(v) < 1e-9


MIN_IMPORTANCE_TRIALS = 2
# PED-ANOVA contrasts the top 10% of trials with the rest: below 20 trials that is one trial.
RELIABLE_IMPORTANCE_TRIALS = 20


def importance_info(
    snap: StudySnapshot, evaluator: optuna.importance.BaseImportanceEvaluator | None = None
) -> ImportanceInfo:
    """Hyperparameter importances over ``snap``'s complete trials (Optuna's default evaluator).

    With too few complete trials, or when the evaluator warns that the estimate is unreliable,
    ``note`` says so; the function never raises on small studies.
    """
    done = snap.feasible_complete()
    name = type(evaluator).__name__ if evaluator else "PedAnovaImportanceEvaluator"
    varying = {p for t in done for p in t.params if len({repr(u.params.get(p)) for u in done}) > 1}
    if len(done) < MIN_IMPORTANCE_TRIALS or not varying:
        why = (
            f"only {len(done)} complete trial(s)"
            if len(done) < MIN_IMPORTANCE_TRIALS
            else "no parameter varies across the complete trials"
        )
        return ImportanceInfo(
            {},
            name,
            len(done),
            f"Importances need at least "
            f"{MIN_IMPORTANCE_TRIALS} complete trials with varying parameters; "
            f"{why}.",
        )
    # A private in-memory copy: the evaluator needs a Study, the report must not write one.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            direction="maximize" if snap.maximize else "minimize",
            study_name=f"{snap.name}-importance",
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(done)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as e:
            return ImportanceInfo({}, name, len(done), f"Importances could not be computed: {e}")
    notes = list(
        dict.fromkeys(str(w.message) for w in caught if "importance" in str(w.message).lower())
    )
    info = ImportanceInfo(
        importances={k: float(v) for k, v in importances.items()},
        evaluator=name,
        num_trials=len(done),
        note=None,
    )
    if info.tied:
        notes.append(
            f"All {len(importances)} parameters came out equally important: "
            f"{len(done)} complete trials cannot tell them apart yet."
        )
    elif len(done) < RELIABLE_IMPORTANCE_TRIALS:
        notes.append(
            f"Only {len(done)} complete trials (fewer than {RELIABLE_IMPORTANCE_TRIALS}): treat "
            "these importances as rough."
        )
    return replace(info, note=" ".join(notes) or None, reliable=not notes)


# --------------------------------------------------------------------------------------------
# Cost against BPS


def pareto_front(
    costs: Sequence[float], values: Sequence[float], *, cost_lower_better: bool, maximize: bool
) -> np.ndarray:
    """Mask of the points no other point beats on both cost and value.

    Args:
        costs: (P,) cost of each point (parameters, FLOPs, or a throughput).
        values: (P,) objective of each point.
        cost_lower_better: True for parameters/FLOPs, False for samples/s.
        maximize: the objective's direction.

    Returns:
        (P,) bool, True on the front; ties on both axes all stay on it.
    """
    c = np.asarray(costs, dtype=float) * (1.0 if cost_lower_better else -1.0)
    v = np.asarray(values, dtype=float) * (-1.0 if maximize else 1.0)
    # Both now "lower is better": a point is dominated when another is <= on both and < on one.
    le = (c[None, :] <= c[:, None]) & (v[None, :] <= v[:, None])  # (P, P) j no worse than i
    lt = (c[None, :] < c[:, None]) | (v[None, :] < v[:, None])
    return ~np.any(le & lt, axis=1)


@dataclass(frozen=True)
class CostPanel:
    """Objective against one cost attribute, with the Pareto-optimal trials marked."""

    attr: str
    label: str
    log_x: bool
    numbers: tuple[int, ...]
    costs: tuple[float, ...]
    values: tuple[float, ...]
    on_front: tuple[bool, ...]


@dataclass(frozen=True)
class CostInfo:
    panels: tuple[CostPanel, ...]


# (user attribute name, its value in a trial's record, axis label, lower is better)
COST_ATTRS: tuple[tuple[str, Callable[[TrialRecord], float | None], str, bool], ...] = (
    (PARAMS_COUNT, lambda r: r.params_count, "parameters", True),
    (FLOPS_PER_SAMPLE, lambda r: r.flops_per_sample, "training FLOPs per sample", True),
    (SAMPLES_PER_S, lambda r: r.samples_per_s, "training samples/s", False),
)


def cost_info(snap: StudySnapshot) -> CostInfo:
    """One panel per cost attribute that the complete trials recorded."""
    done = [(t, TrialRecord.of(t)) for t in snap.feasible_complete()]
    panels = []
    for attr, cost, label, lower in COST_ATTRS:
        pts = [
            (t.number, float(c), objective(t))
            for t, r in done
            if (c := cost(r)) is not None and math.isfinite(c)
        ]
        if not pts:
            continue
        numbers, costs, values = zip(*pts, strict=True)
        front = pareto_front(costs, values, cost_lower_better=lower, maximize=snap.maximize)
        positive = all(c > 0 for c in costs)
        panels.append(
            CostPanel(
                attr=attr,
                label=label,
                log_x=positive and max(costs) / min(costs) > 20,
                numbers=tuple(numbers),
                costs=tuple(costs),
                values=tuple(values),
                on_front=tuple(bool(x) for x in front),
            )
        )
    return CostInfo(panels=tuple(panels))


# --------------------------------------------------------------------------------------------
# Per-session BPS


@dataclass(frozen=True)
class SessionsInfo:
    """Validation BPS per session of the top trials, and the oracle where known.

    ``bps[i][j]`` is trial ``numbers[i]`` on session ``sessions[j]`` (NaN where not recorded).
    """

    sessions: tuple[str, ...]
    numbers: tuple[int, ...]
    bps: tuple[tuple[float, ...], ...]
    oracle: tuple[float | None, ...]


def sessions_info(snap: StudySnapshot, top: int = 5) -> SessionsInfo:
    """Per-session validation BPS (``val_bps_per_session``) of the ``top`` best complete trials."""
    done = snap.feasible_complete()
    ranked = sorted(done, key=objective, reverse=snap.maximize)
    records = [TrialRecord.of(t) for t in ranked]
    chosen = [(r.number, per) for r in records if (per := r.val_bps_per_session) is not None][:top]
    oracle = snap.oracle_per_session()
    sessions = sorted({s for _, per in chosen for s in per} | set(oracle))
    rows = [tuple(per.get(s, math.nan) for s in sessions) for _, per in chosen]
    return SessionsInfo(
        sessions=tuple(sessions),
        numbers=tuple(n for n, _ in chosen),
        bps=tuple(rows),
        oracle=tuple(oracle.get(s) for s in sessions),
    )


# --------------------------------------------------------------------------------------------
# Ablation grid


def is_seed_param(name: str) -> bool:
    """Whether parameter ``name`` is a random seed (spread over it, not a factor)."""
    return name.split(".")[-1].lower() in ("seed", "seeds", "train_seed", "repeat", "replicate")


@dataclass(frozen=True)
class AblationRow:
    """One level of one factor: the mean objective over seeds and its spread.

    ``mean`` and ``std`` are over the per-seed means (each seed's trials at this level averaged
    over the other factors); without a seed parameter, over the trials themselves.
    """

    factor: str
    level: str
    mean: float
    std: float
    num_trials: int
    num_seeds: int
    delta: float  # mean minus the factor's best level mean (0 for the best level)


@dataclass(frozen=True)
class AblationInfo:
    factors: tuple[str, ...]
    seed_param: str | None
    rows: tuple[AblationRow, ...]
    num_complete: int
    num_excluded: int  # grid points that did not complete (pruned, failed, infeasible, running)


def _is_grid(snap: StudySnapshot) -> bool:
    if any("grid_id" in t.system_attrs for t in snap.trials):
        return True
    spec = snap.spec()
    sampler = spec.get("sampler")
    kind = sampler.get("name", sampler.get("kind")) if isinstance(sampler, dict) else sampler
    return isinstance(kind, str) and kind.lower() == "grid"


def _level_key(v: Any) -> tuple[int, Any]:
    # Numbers sort numerically, everything else by text; bools as text ("False" < "True").
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v))
    return (1, str(v))


def ablation_info(snap: StudySnapshot, force: bool = False) -> AblationInfo | None:
    """Each factor's effect in a grid (ablation) study, or None when the study is not a grid.

    Args:
        snap: the study.
        force: treat the study as a grid even without a grid sampler's marks.
    """
    if not (force or _is_grid(snap)):
        return None
    done = snap.feasible_complete()
    names = sorted({p for t in snap.trials for p in t.params})
    space = _spec_space(snap.spec())
    seed = next(
        (n for n in names if is_seed_param(n) or "train.seed" in _targets(space.get(n, {}))),
        None,
    )
    rows: list[AblationRow] = []
    factors = []
    for name in names:
        if name == seed:
            continue
        levels = sorted({t.params[name] for t in done if name in t.params}, key=_level_key)
        if len(levels) < 2:
            continue
        factors.append(name)
        stats = []
        for level in levels:
            at = [t for t in done if name in t.params and t.params[name] == level]
            by_seed: dict[Any, list[float]] = defaultdict(list)
            for t in at:
                key = t.params.get(seed) if seed else t.number
                by_seed[key].append(objective(t))
            means = np.array([np.mean(v) for v in by_seed.values()])
            std = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
            stats.append((level, float(means.mean()), std, len(at), len(by_seed) if seed else 0))
        best = max(s[1] for s in stats) if snap.maximize else min(s[1] for s in stats)
        for level, mean, std, n, n_seeds in stats:
            rows.append(AblationRow(name, str(level), mean, std, n, n_seeds, mean - best))
    return AblationInfo(
        factors=tuple(factors),
        seed_param=seed,
        rows=tuple(rows),
        num_complete=len(done),
        num_excluded=len(snap.trials) - len(done),
    )


# --------------------------------------------------------------------------------------------
# ViViT against the CNN baseline


@dataclass(frozen=True)
class BaselineGroup:
    """The complete trials of one model family (or one study)."""

    label: str
    numbers: tuple[int, ...]
    values: tuple[float, ...]
    n_params: tuple[float | None, ...]
    best_number: int
    best_value: float


@dataclass(frozen=True)
class BaselineInfo:
    groups: tuple[BaselineGroup, ...]
    maximize: bool


_KIND_KEY = "model.core.kind"


def _spec_space(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    space = spec.get("space")
    if not isinstance(space, dict):
        return {}
    return {str(k): v for k, v in space.items() if isinstance(v, dict)}


def _targets(param: Mapping[str, Any]) -> list[str]:
    to = param.get("to")
    return [to] if isinstance(to, str) else [str(x) for x in to] if isinstance(to, list) else []


def _core_kind_param(snap: StudySnapshot, trials: Sequence[FrozenTrial]) -> str | None:
    """The parameter that picks the core: the spec's ``to: model.core.kind``, or its name."""
    names = {p for t in trials for p in t.params}
    for name, param in _spec_space(snap.spec()).items():
        if _KIND_KEY in _targets(param) and name in names:
            return name
    return next((p for p in sorted(names) if p.endswith("core.kind") or p == "core_kind"), None)


def _spec_core_kind(snap: StudySnapshot) -> str | None:
    """The core kind every trial of the study has when the search does not vary it."""
    spec = snap.spec()
    base = spec.get("base") if isinstance(spec.get("base"), dict) else {}
    assert isinstance(base, dict)
    kind: Any = None
    for item in base.get("overrides") or []:
        key, _, value = str(item).partition("=")
        if key.strip() == _KIND_KEY:
            kind = value.strip()
    if kind is None:
        node: Any = base.get("config")
        for key in ("model", "core", "kind"):
            node = node.get(key) if isinstance(node, dict) else None
        kind = node
    for param in _spec_space(spec).values():
        if _KIND_KEY in _targets(param) and param.get("value") is not None:
            kind = param["value"]
    return kind if isinstance(kind, str) else None


def _groups_of(snap: StudySnapshot) -> dict[str, list[FrozenTrial]]:
    done = snap.feasible_complete()
    param = _core_kind_param(snap, done)
    fixed = _spec_core_kind(snap) or "vivit"  # the config's default core
    groups: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in done:
        kind = t.params.get(param) if param else None
        groups[str(kind or fixed)].append(t)
    return groups


def baseline_info(snap: StudySnapshot, compare: StudySnapshot | None = None) -> BaselineInfo | None:
    """ViViT against CNN-baseline trials, or None when there is only one model family.

    Families come from the search parameter written to ``model.core.kind`` (else the spec's
    base config, else ViViT, the default core) within ``snap``; a ``compare`` study adds its
    trials per family, labelled ``"<study> (<kind>)"``.
    """
    groups = _groups_of(snap)
    if compare is not None:
        other = _groups_of(compare)
        for kind, trials in other.items():
            groups[f"{compare.name} ({kind})"] = trials
    if len(groups) < 2:
        return None
    out = []
    for label, trials in groups.items():
        values = [objective(t) for t in trials]
        i = int(np.argmax(values) if snap.maximize else np.argmin(values))
        out.append(
            BaselineGroup(
                label=label,
                numbers=tuple(t.number for t in trials),
                values=tuple(values),
                n_params=tuple(
                    None if (p := TrialRecord.of(t).params_count) is None else float(p)
                    for t in trials
                ),
                best_number=trials[i].number,
                best_value=values[i],
            )
        )
    return BaselineInfo(groups=tuple(out), maximize=snap.maximize)
