"""The attribute names a trial's story is written under, and :class:`TrialRecord`, the typed
view of one trial that reads them back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optuna.trial import FrozenTrial, TrialState

FEASIBLE = "feasible"  # the constraint key: > 0 violated

# User attributes. Why the trial ended (one of them, or none):
FAIL_REASON = "fail_reason"
INFEASIBLE_REASON = "infeasible_reason"
PRUNE_REASON = "prune_reason"
# Set when the trial is enqueued (vivit_hpo.search.study), read by the objective:
BASELINE = "baseline"  # the spec's base config, never pruned
EXTRA_OVERRIDES = "extra_overrides"  # run-config overrides of this trial alone
# A yardstick (the spec's `baselines`: a lab's own model, e.g. a 2-D CNN or an LN model): the
# name (the run config's file stem) and its resolved run config. It samples nothing, is never
# pruned, and the sampler and pruner never see it (vivit_hpo.search.factory).
YARDSTICK = "yardstick"
YARDSTICK_CONFIG = "yardstick_config"
# Written by the objective when training starts:
HOST = "host"
DEVICE = "device"  # "cpu", or "cuda:i (<name>)"
PID = "pid"
THREADS = "threads"  # CPU trials only
VALUES = "values"  # the search-space values, whatever Optuna parameters sampled them
RUN_CONFIG = "run_config"  # the resolved run config, as a mapping
TRIAL_DIR = "trial_dir"  # the trial's run folder
PARAMS_COUNT = "params_count"
FLOPS_PER_SAMPLE = "flops_per_sample"
RESUMED_FROM_TRIAL = "resumed_from_trial"  # a retry that took over its predecessor's folder
RESUMED_FROM_EPOCH = "resumed_from_epoch"
# Written when it ends (and when it is interrupted):
SAMPLES_PER_S = "samples_per_s"
BINS_PER_S = "bins_per_s"
PEAK_MEMORY_MB = "peak_memory_mb"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"  # the epoch of the kept checkpoint (the value's epoch)
VAL_BPS_PER_SESSION = "val_bps_per_session"  # at the best epoch
VAL_BPS = "val_bps"  # the best epoch's mean validation BPS over sessions (whatever the objective)
VAL_CORR = "val_corr"  # the best epoch's mean validation correlation (r) over sessions
# {session: "spikes" or "calcium"}: what the responses are, so that the report names the score
RESPONSE_KINDS = "response_kinds"
STOPPED_EARLY = "stopped_early"
STOPPED_AT_DEADLINE = "stopped_at_deadline"  # ended with its best epoch at the worker's finish-by
TEST_BPS = "test_bps"  # the best checkpoint on the test split, mean over sessions
TEST_BPS_PER_SESSION = "test_bps_per_session"
TEST_CORR = "test_corr"  # that checkpoint's mean test correlation over sessions
TEST_BPS_ERROR = "test_bps_error"  # why the test split could not be scored
# Optuna's retry bookkeeping (system attributes): the first trial of the chain, and every
# trial this one replaces, oldest first.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
# Ours, beside it: why each trial of the retry history was retried, and on which worker
# (``{"cause": RetryCause, "worker": "host:pid"}``, one per entry; older studies have none).
RETRY_CAUSES = "retry_causes"
# Optuna's record of the values a trial was enqueued with, under Optuna's parameter names.
FIXED_PARAMS = "fixed_params"

# Names that studies made by earlier versions used for the same quantity (the report reads them).
_OLD_NAMES = {PARAMS_COUNT: "n_params", TRIAL_DIR: "run_dir"}

Status = Literal["complete", "pruned", "infeasible", "failed", "running", "waiting"]


def status(t: FrozenTrial) -> Status:
    """What trial ``t`` ended as (or is doing)."""
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.user_attrs.get(INFEASIBLE_REASON):
        return "infeasible"
    if t.user_attrs.get(FAIL_REASON) or t.state == TrialState.FAIL:
        return "failed"
    if any(v > 0 for v in t.constraints.values()):
        return "infeasible"
    return "complete" if t.state == TrialState.COMPLETE else "pruned"


def is_yardstick(t: FrozenTrial) -> bool:
    """True for a yardstick trial (the spec's ``baselines``): never the search's result."""
    return bool(t.user_attrs.get(YARDSTICK))


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _integer(x: Any) -> int | None:
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _per_session(x: Any) -> dict[str, float] | None:
    if not isinstance(x, Mapping):
        return None
    return {str(k): v for k, n in x.items() if (v := _number(n)) is not None}


def _kinds(x: Any) -> dict[str, str] | None:
    if not isinstance(x, Mapping):
        return None
    return {str(k): v for k, v in x.items() if isinstance(v, str)}


def _attr(attrs: Mapping[str, Any], name: str) -> Any:
    """Attribute ``name``, else its old name (if it has one)."""
    return attrs[name] if name in attrs else attrs.get(_OLD_NAMES.get(name, name))


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the study commands and the report read it: Optuna's fields and the
    attributes the objective writes, typed. A field is None when the trial has not recorded
    it (not yet, or not of that type); :meth:`of` never raises on a foreign study's trial.

    Attributes:
        number: the trial number.
        status: what it ended as (:func:`status`).
        value: the objective (mean validation BPS, or correlation where the study's objective
            is corr, of the best epoch) of a COMPLETE trial; None
            otherwise (Optuna gives a pruned trial its last report as a value: not a result).
        params: the search-space values (``values``) if it has them, else Optuna's parameters.
        values: the ``values`` attribute alone (None when the trial has none).
        reason: why it ended: its infeasible, fail or prune reason, in that order.
        fail_reason: the fail reason alone (a retried trial's: a prune reason written just
            before its worker was lost is not why it failed).
        epochs: the last epoch it reported, so far while it runs (a retry inherits the
            reports of the trial it replaces).
        epochs_run: the epochs the objective recorded when the trial ended.
        best_epoch: the epoch of the kept checkpoint.
        val_bps_per_session: validation BPS by session at the best epoch.
        val_corr: the best epoch's mean validation correlation over sessions.
        val_bps: the best epoch's mean validation BPS over sessions (the value of a study whose
            objective is bps; recorded beside it when the objective is corr).
        test_bps, test_bps_per_session, test_corr: that checkpoint on the test split.
        test_bps_error: why the test split was not scored.
        response_kinds: each session's response kind (``spikes``, ``calcium``); None in trials
            recorded before it was kept (spikes).
        run_dir: the trial's run folder (``trial_dir``).
        run_config: the resolved run config (``RunConfig.to_dict()``).
        baseline: the spec's base config, enqueued first.
        yardstick: the name of the yardstick this trial trains (the spec's ``baselines``: the
            run config's file stem); None for the search's own trials.
        seconds: from its start to its end (None while it runs).
        host, device: where it ran.
        params_count, flops_per_sample, samples_per_s, bins_per_s, peak_memory_mb: its costs.
        resumed_from_trial, resumed_from_epoch: what a retry resumed.
        failed_trial: the first trial of the retry chain (None unless this is a retry).
        retry_history: the trials this one retries, oldest first.
    """

    number: int
    status: Status
    value: float | None
    params: dict[str, Any]
    values: dict[str, Any] | None
    reason: str | None
    fail_reason: str | None
    epochs: int
    epochs_run: int | None
    best_epoch: int | None
    val_bps_per_session: dict[str, float] | None
    test_bps: float | None
    test_bps_per_session: dict[str, float] | None
    test_bps_error: str | None
    run_dir: Path | None
    run_config: dict[str, Any] | None
    baseline: bool
    yardstick: str | None
    seconds: float | None
    host: str | None
    device: str | None
    params_count: int | None
    flops_per_sample: float | None
    samples_per_s: float | None
    bins_per_s: float | None
    peak_memory_mb: float | None
    resumed_from_trial: int | None
    resumed_from_epoch: int | None
    failed_trial: int | None
    retry_history: tuple[int, ...]
    val_corr: float | None = None
    test_corr: float | None = None
    response_kinds: dict[str, str] | None = None
    val_bps: float | None = None

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord:
        """The record of trial ``t``."""
        a = t.user_attrs
        values = a.get(VALUES)
        values = dict(values) if isinstance(values, Mapping) else None
        config = a.get(RUN_CONFIG)
        run_dir = _attr(a, TRIAL_DIR)
        why = (a.get(k) for k in (INFEASIBLE_REASON, FAIL_REASON, PRUNE_REASON))
        reason = next((w for w in why if w), None)
        return cls(
            number=t.number,
            status=status(t),
            value=t.value if t.state == TrialState.COMPLETE else None,
            params=dict(values or t.params),
            values=values,
            reason=None if reason is None else str(reason),
            fail_reason=str(a[FAIL_REASON]) if a.get(FAIL_REASON) else None,
            epochs=max(t.intermediate_values, default=0),
            epochs_run=_integer(a.get(EPOCHS_RUN)),
            best_epoch=_integer(a.get(BEST_EPOCH)),
            val_bps_per_session=_per_session(a.get(VAL_BPS_PER_SESSION)),
            test_bps=_number(a.get(TEST_BPS)),
            test_bps_per_session=_per_session(a.get(TEST_BPS_PER_SESSION)),
            test_bps_error=_text(a.get(TEST_BPS_ERROR)),
            run_dir=Path(run_dir) if isinstance(run_dir, str) else None,
            run_config=dict(config) if isinstance(config, Mapping) else None,
            baseline=bool(a.get(BASELINE)),
            yardstick=_text(a.get(YARDSTICK)) or None,
            seconds=(
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None
            ),
            host=_text(a.get(HOST)),
            device=_text(a.get(DEVICE)),
            params_count=_integer(_attr(a, PARAMS_COUNT)),
            flops_per_sample=_number(a.get(FLOPS_PER_SAMPLE)),
            samples_per_s=_number(a.get(SAMPLES_PER_S)),
            bins_per_s=_number(a.get(BINS_PER_S)),
            peak_memory_mb=_number(a.get(PEAK_MEMORY_MB)),
            resumed_from_trial=_integer(a.get(RESUMED_FROM_TRIAL)),
            resumed_from_epoch=_integer(a.get(RESUMED_FROM_EPOCH)),
            failed_trial=_integer(t.system_attrs.get(FAILED_TRIAL)),
            retry_history=tuple(
                n for x in t.system_attrs.get(RETRY_HISTORY) or () if (n := _integer(x)) is not None
            ),
            val_corr=_number(a.get(VAL_CORR)),
            test_corr=_number(a.get(TEST_CORR)),
            response_kinds=_kinds(a.get(RESPONSE_KINDS)),
            val_bps=_number(a.get(VAL_BPS)),
        )


def retried_numbers(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """``{failed trial number: number of the trial that retries it}``."""
    out: dict[int, int] = {}
    for t in trials:
        history = TrialRecord.of(t).retry_history
        if history:
            out[history[-1]] = t.number
    return out


def response_kinds(trials: Iterable[FrozenTrial]) -> set[str]:
    """What a study's sessions hold (``spikes``, ``calcium``), as its trials recorded it;
    ``{"spikes"}`` when none did (a study from before the attribute, or no trial yet)."""
    kinds = {k for t in trials for k in (TrialRecord.of(t).response_kinds or {}).values()}
    return kinds or {"spikes"}


def worker_of(t: FrozenTrial) -> str | None:
    """``host:pid`` of the worker that ran ``t``, if it recorded it."""
    host, pid = t.user_attrs.get(HOST), t.user_attrs.get(PID)
    return f"{host}:{pid}" if host and pid else None
