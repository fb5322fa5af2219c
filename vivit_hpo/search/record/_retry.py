"""Retries of a trial: why it was retried (:data:`RetryCause`), the cap per cause, and the
WAITING copy that resumes it (:func:`retry_of`), also for Optuna's stale-heartbeat check."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

import optuna
from optuna.storages._rdb.models import TrialUserAttributeModel
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.search.record._trial import (
    FAIL_REASON,
    FAILED_TRIAL,
    PRUNE_REASON,
    RESUMED_FROM_EPOCH,
    RESUMED_FROM_TRIAL,
    RETRY_CAUSES,
    RETRY_HISTORY,
    worker_of,
)

_log = logging.getLogger(__name__)

# Why a trial was failed and retried. Each cause has its own cap per logical trial (the spec's
# `heartbeat` section), counted from the trial's record (RETRY_CAUSES): a config whose error
# is classed as the node's must not loop for ever, and preemptions must not spend the retries
# that a worker's death needs.
RetryCause = Literal["infrastructure", "interrupt", "heartbeat"]
INFRASTRUCTURE: RetryCause = "infrastructure"  # the node failed it (vivit_hpo.infra)
INTERRUPT: RetryCause = "interrupt"  # its worker was stopped by a signal (preemption, Ctrl-C)
HEARTBEAT: RetryCause = "heartbeat"  # its worker died, or was cut off from the database
_CAP = {
    INFRASTRUCTURE: ("with an infrastructure error", "heartbeat.max_infra_retries", "fix the node"),
    INTERRUPT: (
        "with its worker stopped by a signal (preempted)",
        "heartbeat.max_interrupt_retries",
        "give the workers longer allocations",
    ),
    HEARTBEAT: (
        "with its heartbeat lost (its worker died or lost the database)",
        "heartbeat.max_retry",
        "find why the workers die (the kernel's OOM killer, a kill without a signal)",
    ),
}

# What a retry must not inherit: why its predecessor ended, and the pruner's bookkeeping of the
# predecessor's rungs (a retry with those lands in a bracket whose next check may never come).
_STALE_USER_ATTRS = (FAIL_REASON, PRUNE_REASON, RESUMED_FROM_TRIAL, RESUMED_FROM_EPOCH)
_STALE_SYSTEM_PREFIXES = ("completed_rung_", "constraints")


def _causes(t: FrozenTrial) -> list[dict[str, str]]:
    """One ``{"cause", "worker"}`` per entry of ``t``'s retry history (``unknown`` for the
    entries of studies made before causes were kept)."""
    history = t.system_attrs.get(RETRY_HISTORY) or []
    raw = t.system_attrs.get(RETRY_CAUSES) or []
    causes = [
        {"cause": str(c.get("cause", "unknown")), "worker": str(c.get("worker") or "")}
        for c in raw
        if isinstance(c, Mapping)
    ]
    missing = max(0, len(history) - len(causes))
    return [{"cause": "unknown", "worker": ""}] * missing + causes


def out_of_retries(
    t: FrozenTrial, cause: RetryCause, cap: int, last: str, worker: str | None
) -> str | None:
    """Why ``t``, just failed for ``cause`` on ``worker`` with reason ``last``, must not be
    retried once more, or None if it may: it was retried ``cap`` times for that cause already
    (counted from its record; the other causes' retries do not count)."""
    before = [c for c in _causes(t) if c["cause"] == cause]
    if len(before) < cap:
        return None
    what, field, fix = _CAP[cause]
    workers = {c["worker"] for c in before if c["worker"]} | ({worker} if worker else set())
    where = f" on {len(workers)} worker{'s' if len(workers) != 1 else ''}" if workers else ""
    n = len(before) + 1
    return (
        f"failed {n} time{'s' if n != 1 else ''} {what}{where}: {last}; "
        f"raise {field} (now {cap}) or {fix}"
    )


def retry_of(
    t: FrozenTrial, cause: RetryCause = HEARTBEAT, worker: str | None = None
) -> FrozenTrial:
    """A WAITING copy of ``t`` that resumes it: its parameters, attributes and reports, with
    Optuna's retry bookkeeping (``failed_trial``, ``retry_history``) and why ``t`` was retried
    (``cause``, on ``worker``: by default the one ``t`` recorded), but none of the attributes
    that say why ``t`` ended and none of the pruner's state."""
    system_attrs: dict[str, Any] = {
        k: v for k, v in t.system_attrs.items() if not k.startswith(_STALE_SYSTEM_PREFIXES)
    }
    system_attrs[FAILED_TRIAL] = t.system_attrs.get(FAILED_TRIAL, t.number)
    system_attrs[RETRY_HISTORY] = [*(t.system_attrs.get(RETRY_HISTORY) or []), t.number]
    system_attrs[RETRY_CAUSES] = [
        *_causes(t),
        {"cause": cause, "worker": worker or worker_of(t) or ""},
    ]
    return optuna.create_trial(
        state=TrialState.WAITING,
        params=t.params,
        distributions=t.distributions,
        user_attrs={k: v for k, v in t.user_attrs.items() if k not in _STALE_USER_ATTRS},
        system_attrs=system_attrs,
        intermediate_values=t.intermediate_values,
    )


class RetryStaleTrial:
    """Heartbeat callback: a trial whose worker died is retried with :func:`retry_of` (what
    Optuna's ``RetryHeartbeatStaleTrialCallback`` does, without the stale pruner state), at most
    ``max_retry`` times for a lost heartbeat (:func:`out_of_retries`: interrupts and the node's
    errors have caps of their own). Out of retries, it stays FAIL with the reason."""

    def __init__(self, max_retry: int | None) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        last = "no heartbeat for longer than heartbeat.grace_s"
        why = None
        if self.max_retry is not None:
            why = out_of_retries(trial, HEARTBEAT, self.max_retry, last, worker_of(trial))
        if why is None:
            study.add_trial(retry_of(trial, HEARTBEAT))
            return
        _log.warning("trial %d not retried: %s", trial.number, why)
        _set_final_reason(study, trial._trial_id, why)


def _set_final_reason(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Write ``fail_reason`` of a trial already failed (by the stale check: Optuna refuses the
    attributes of a finished trial), straight into Optuna's table. Other processes read it at
    once; this one's cached copy of the trial keeps the old attributes."""
    storage = study._storage
    rdb = getattr(storage, "_backend", storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return
    table = TrialUserAttributeModel.__table__
    row = table.c.trial_id == trial_id, table.c.key == FAIL_REASON
    with rdb.engine.begin() as conn:
        conn.execute(table.delete().where(*row))
        conn.execute(
            table.insert().values(trial_id=trial_id, key=FAIL_REASON, value_json=json.dumps(reason))
        )
