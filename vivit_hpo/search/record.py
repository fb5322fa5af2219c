"""A trial's record: what it ended as, and what a retry of it carries.

The objective writes a trial's story into Optuna's own fields (state, value, constraints) and a
few user attributes (the names below); this module is the one place that reads them back, for
the study commands, the progress table and the report.

How the states map (see :mod:`vivit_hpo.search.objective` for who writes what):

- ``complete``: COMPLETE with a value.
- ``pruned``: PRUNED by the pruner (``prune_reason``).
- ``infeasible``: the cheap pre-check refused the config before any step (``infeasible_reason``).
- ``failed``: it ran and could not finish: out of memory or a non-finite loss (Optuna state
  PRUNED with the constraint ``feasible`` violated, so that TPE learns to avoid the region), or
  an error (state FAIL); ``fail_reason`` says which.
- ``running``, ``waiting``: not finished.

Beside the database, a trial's run folder holds :data:`EPOCHS_FILE`, one JSON line per finished
epoch (:class:`EpochRecord`: trial number, epoch, the worker that trained it, when). A retry takes
its predecessor's folder over, so the file accumulates every epoch of a logical trial across
retries: who trained what, and when, for the chaos checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "EPOCHS_FILE",
    "FAIL_REASON",
    "FEASIBLE",
    "INFEASIBLE_REASON",
    "PRUNE_REASON",
    "EpochRecord",
    "RetryStaleTrial",
    "Status",
    "append_epoch",
    "read_epochs",
    "retry_of",
    "status",
]

FEASIBLE = "feasible"  # the constraint key: > 0 violated
FAIL_REASON = "fail_reason"
INFEASIBLE_REASON = "infeasible_reason"
PRUNE_REASON = "prune_reason"
EPOCHS_FILE = "epochs.jsonl"  # in the trial's run folder: one EpochRecord per finished epoch

Status = Literal["complete", "pruned", "infeasible", "failed", "running", "waiting"]

# What a retry must not inherit: why its predecessor ended, and the pruner's bookkeeping of the
# predecessor's rungs (a retry with those lands in a bracket whose next check may never come).
_STALE_USER_ATTRS = (FAIL_REASON, PRUNE_REASON, "resumed_from_trial", "resumed_from_epoch")
_STALE_SYSTEM_PREFIXES = ("completed_rung_", "constraints")


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


def retry_of(t: FrozenTrial) -> FrozenTrial:
    """A WAITING copy of ``t`` that resumes it: its parameters, attributes and reports, with
    Optuna's retry bookkeeping (``failed_trial``, ``retry_history``) but none of the attributes
    that say why ``t`` ended and none of the pruner's state."""
    system_attrs: dict[str, Any] = {
        k: v for k, v in t.system_attrs.items() if not k.startswith(_STALE_SYSTEM_PREFIXES)
    }
    system_attrs["failed_trial"] = t.system_attrs.get("failed_trial", t.number)
    system_attrs["retry_history"] = [*(t.system_attrs.get("retry_history") or []), t.number]
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
    ``max_retry`` times."""

    def __init__(self, max_retry: int | None) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        tries = len(trial.system_attrs.get("retry_history") or []) + 1
        if self.max_retry is not None and tries > self.max_retry:
            return
        study.add_trial(retry_of(trial))


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of a trial: which worker (``host:pid``) trained it, and when
    (wall-clock seconds since the epoch, ``time.time()``)."""

    trial: int
    epoch: int
    worker: str
    start: float
    end: float


def append_epoch(run_dir: Path, record: EpochRecord) -> None:
    """Append ``record`` to ``run_dir/epochs.jsonl``, flushed and fsynced: a worker killed
    afterwards loses at most the epoch it was training."""
    with open(run_dir / EPOCHS_FILE, "a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_epochs(run_dir: Path) -> list[EpochRecord]:
    """The records in ``run_dir/epochs.jsonl`` (none if it is missing); a torn last line (a
    machine that lost power mid-write) is skipped."""
    try:
        lines = (run_dir / EPOCHS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(EpochRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out
