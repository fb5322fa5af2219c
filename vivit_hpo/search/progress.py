"""A study's standing, read from its trials (pure): the counts of the live table and the budget
(a retried failure counts once, through its retry), the rows of ``study show``, the search's best
trial, and the best ViViT beside the yardsticks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.errors import StudyError
from vivit_hpo.search.record import TrialRecord, is_yardstick, retried_numbers, status
from vivit_hpo.search.spec import StudySpec

__all__ = [
    "Standing",
    "StudyProgress",
    "TrialRow",
    "best_of",
    "best_trial",
    "is_infeasible",
    "oracle_test_bps",
    "progress",
    "searched_complete",
    "standings",
    "trial_rows",
]


def is_infeasible(t: FrozenTrial) -> bool:
    return status(t) == "infeasible"


@dataclass(frozen=True)
class StudyProgress:
    """Counts for the live table and the budget. ``logical`` excludes retried failures (their
    retry stands in for them); the budget is spent when ``logical >= n_trials``."""

    n_trials: int
    running: int
    waiting: int
    complete: int
    pruned: int
    infeasible: int
    failed: int  # final failures (NaN, OOM, errors, or out of retries)
    retried: int  # failures that were retried (dead worker, interrupted)
    logical: int
    best_value: float | None
    best_number: int | None
    first_start: dt.datetime | None
    last_end: dt.datetime | None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.infeasible + self.failed

    @property
    def done(self) -> bool:
        """Budget allocated and nothing running or waiting."""
        return self.logical >= self.n_trials and self.running == 0 and self.waiting == 0


def progress(trials: Sequence[FrozenTrial], n_trials: int) -> StudyProgress:
    """Count a study's trials (pure: pass ``study.get_trials(deepcopy=False)``)."""
    retried = retried_numbers(trials)
    c: Counter[str] = Counter()
    for t in trials:
        # RUNNING with a retry: failed as stale by a process that died before it failed it.
        if t.state in (TrialState.FAIL, TrialState.RUNNING) and t.number in retried:
            c["retried"] += 1
            continue
        c["logical"] += 1
        c[status(t)] += 1
    best = best_of(trials)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return StudyProgress(
        n_trials=n_trials,
        running=c["running"],
        waiting=c["waiting"],
        complete=c["complete"],
        pruned=c["pruned"],
        infeasible=c["infeasible"],
        failed=c["failed"],
        retried=c["retried"],
        logical=c["logical"],
        best_value=None if best is None else best.value,
        best_number=None if best is None else best.number,
        first_start=min(starts) if starts else None,
        last_end=max(ends) if ends else None,
    )


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, INFEASIBLE, FAIL, RUNNING, WAITING, RETRIED
    value: float | None
    test_value: float | None  # the best epoch's checkpoint on the test split
    other: float | None  # the best epoch's validation score of the other objective
    epochs: int
    best_epoch: int | None
    params: dict[str, Any]
    reason: str
    seconds: float | None


def _reason(r: TrialRecord, retried_as: int | None) -> str:
    if retried_as is not None:
        return f"{r.fail_reason or 'worker lost (no heartbeat)'}; retried as #{retried_as}"
    if r.reason:
        return r.reason
    if r.resumed_from_epoch:
        return f"resumed after epoch {r.resumed_from_epoch} of #{r.resumed_from_trial}"
    if r.yardstick:
        return f"yardstick {r.yardstick} (not searched)"
    return "the base config (baseline)" if r.baseline else ""


def trial_rows(trials: Sequence[FrozenTrial], objective: str = "bps") -> list[TrialRow]:
    """One row per trial for ``study show`` (pure): the value and test score of
    ``objective`` (``bps`` or ``corr``), and beside them the validation score of the other."""
    retried = retried_numbers(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        r = TrialRecord.of(t)
        retried_as = retried.get(t.number) if t.state == TrialState.FAIL else None
        if retried_as is not None:
            state = "RETRIED"
        else:
            state = {"complete": "COMPLETE", "failed": "FAIL"}.get(r.status, r.status.upper())
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            TrialRow(
                number=r.number,
                state=state,
                value=r.value,
                test_value=r.test_corr if objective == "corr" else r.test_bps,
                other=r.val_bps if objective == "corr" else r.val_corr,
                epochs=r.epochs,
                best_epoch=r.best_epoch,
                params=r.params,
                reason=_reason(r, retried_as),
                seconds=seconds,
            )
        )
    return rows


def searched_complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The search's feasible COMPLETE trials with a finite value: no yardstick."""
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and not is_infeasible(t)
        and not is_yardstick(t)
        and t.value is not None
        and math.isfinite(t.value)
    ]


def best_of(trials: Sequence[FrozenTrial], *, maximize: bool = True) -> FrozenTrial | None:
    """The search's best trial (pure): the feasible COMPLETE trial with the best value, the
    lowest number on a tie; never a yardstick (``baselines``), whatever it scores. The one
    rule every command, the live table and the report use (not Optuna's ``best_trial``, which
    would pick a yardstick that scores higher). None when no such trial has completed."""
    done = searched_complete(trials)
    if not done:
        return None
    sign = 1.0 if maximize else -1.0
    return max(done, key=lambda t: (sign * float(t.value or 0.0), -t.number))


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The search's best trial (:func:`best_of`) of ``study``.

    Raises:
        StudyError: no trial of the search has completed yet.
    """
    best = best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if best is None:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial yet; run "
            f"`vivit-hpo worker {study.study_name}` and try again"
        )
    return best


@dataclass(frozen=True)
class Standing:
    """One row of the comparison of the best ViViT with the yardsticks."""

    label: str  # "best ViViT" or the yardstick's name
    number: int | None  # its trial (None: not finished yet)
    state: str  # complete, or what the yardstick's trial is doing / ended as
    test_bps: float | None
    fraction_of_oracle: float | None
    seconds: float | None  # training time (the trial's start to its end)
    params_count: int | None


def standings(
    trials: Sequence[FrozenTrial], oracle: float | None, *, maximize: bool = True
) -> list[Standing]:
    """The best ViViT (:func:`best_of`) beside each yardstick of the study (pure): test BPS,
    its fraction of the oracle's test BPS where the data has one, training seconds. Empty for a
    study without yardsticks. A yardstick retried after a lost worker shows its last trial."""
    yard: dict[str, TrialRecord] = {}
    for t in sorted(trials, key=lambda t: t.number):
        r = TrialRecord.of(t)
        if r.yardstick and (r.yardstick not in yard or t.state != TrialState.FAIL):
            yard[r.yardstick] = r
    if not yard:
        return []

    def row(label: str, r: TrialRecord | None) -> Standing:
        if r is None:
            return Standing(label, None, "none", None, None, None, None)
        frac = None
        if r.test_bps is not None and oracle is not None and oracle > 0:
            frac = r.test_bps / oracle
        return Standing(label, r.number, r.status, r.test_bps, frac, r.seconds, r.params_count)

    best = best_of(trials, maximize=maximize)
    out = [row("best ViViT", None if best is None else TrialRecord.of(best))]
    return out + [row(name, r) for name, r in yard.items()]


def oracle_test_bps(spec: StudySpec, study_name: str) -> float | None:
    """The oracle's test BPS (mean over sessions) where the study's data are simulated; None
    otherwise."""
    from vivit_hpo.data.oracle import oracle_split_mean

    return oracle_split_mean(spec.data_paths(study_name))
