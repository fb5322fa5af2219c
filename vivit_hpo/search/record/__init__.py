"""A trial's record: what it ended as, what it measured, and what a retry of it carries.

The objective writes a trial's story into Optuna's own fields (state, value, constraints) and a
few user attributes (the names below); this module is the one place that reads them back:
:class:`TrialRecord` is the typed view of one trial that the study commands, the progress
table, the search benchmark and the report read instead of attribute names.

How the states map (see :mod:`vivit_hpo.search.outcome` for who writes what):

- ``complete``: COMPLETE with a value.
- ``pruned``: PRUNED by the pruner (``prune_reason``).
- ``infeasible``: the cheap pre-check refused the config before any step (``infeasible_reason``).
- ``failed``: it ran and could not finish: out of memory or a non-finite loss (Optuna state
  PRUNED with the constraint ``feasible`` violated, so that TPE learns to avoid the region), or
  an error (state FAIL); ``fail_reason`` says which.
- ``running``, ``waiting``: not finished.

Beside the database, a trial's run folder holds :data:`EPOCHS_FILE`, one JSON line per finished
epoch (:class:`EpochRecord`: trial number, epoch, the worker that trained it, when, and the
epoch's own validation BPS; the intermediate values are the best so far). A retry takes
its predecessor's folder over, so the file accumulates every epoch of a logical trial across
retries: who trained what, and when, for the chaos checks. An epoch is recorded before it is
committed (its checkpoint, ``metrics.json``), so it may be recorded twice: by a worker killed
before the commit, then by the retry that trained it again (the later record counts).

- :mod:`._trial`: the attribute names, :func:`status` and :class:`TrialRecord`;
- :mod:`._retry`: why a trial was retried, the cap per cause, and :func:`retry_of`;
- :mod:`._epochs`: the epoch log, :class:`EpochRecord`.

Every name is re-exported here.
"""

from __future__ import annotations

from vivit_hpo.search.record._epochs import (
    EPOCHS_FILE,
    EpochRecord,
    append_epoch,
    latest_by_epoch,
    read_epochs,
    unreported_epochs,
)
from vivit_hpo.search.record._retry import (
    HEARTBEAT,
    INFRASTRUCTURE,
    INTERRUPT,
    RetryCause,
    RetryStaleTrial,
    out_of_retries,
    retry_of,
)
from vivit_hpo.search.record._trial import (
    BASELINE,
    BEST_EPOCH,
    BINS_PER_S,
    DEVICE,
    EPOCHS_RUN,
    EXTRA_OVERRIDES,
    FAIL_REASON,
    FAILED_TRIAL,
    FEASIBLE,
    FIXED_PARAMS,
    FLOPS_PER_SAMPLE,
    HOST,
    INFEASIBLE_REASON,
    PARAMS_COUNT,
    PEAK_MEMORY_MB,
    PID,
    PRUNE_REASON,
    RESPONSE_KINDS,
    RESUMED_FROM_EPOCH,
    RESUMED_FROM_TRIAL,
    RETRY_CAUSES,
    RETRY_HISTORY,
    RUN_CONFIG,
    SAMPLES_PER_S,
    STOPPED_AT_DEADLINE,
    STOPPED_EARLY,
    TEST_BPS,
    TEST_BPS_ERROR,
    TEST_BPS_PER_SESSION,
    TEST_CORR,
    THREADS,
    TRIAL_DIR,
    VAL_BPS,
    VAL_BPS_PER_SESSION,
    VAL_CORR,
    VALUES,
    YARDSTICK,
    YARDSTICK_CONFIG,
    Status,
    TrialRecord,
    is_yardstick,
    response_kinds,
    retried_numbers,
    status,
    worker_of,
)

__all__ = [
    "BASELINE",
    "BEST_EPOCH",
    "BINS_PER_S",
    "DEVICE",
    "EPOCHS_FILE",
    "EPOCHS_RUN",
    "EXTRA_OVERRIDES",
    "FAILED_TRIAL",
    "FAIL_REASON",
    "FEASIBLE",
    "FIXED_PARAMS",
    "FLOPS_PER_SAMPLE",
    "HEARTBEAT",
    "HOST",
    "INFEASIBLE_REASON",
    "INFRASTRUCTURE",
    "INTERRUPT",
    "PARAMS_COUNT",
    "PEAK_MEMORY_MB",
    "PID",
    "PRUNE_REASON",
    "RESPONSE_KINDS",
    "RESUMED_FROM_EPOCH",
    "RESUMED_FROM_TRIAL",
    "RETRY_CAUSES",
    "RETRY_HISTORY",
    "RUN_CONFIG",
    "SAMPLES_PER_S",
    "STOPPED_AT_DEADLINE",
    "STOPPED_EARLY",
    "TEST_BPS",
    "TEST_BPS_ERROR",
    "TEST_BPS_PER_SESSION",
    "TEST_CORR",
    "THREADS",
    "TRIAL_DIR",
    "VALUES",
    "VAL_BPS",
    "VAL_BPS_PER_SESSION",
    "VAL_CORR",
    "YARDSTICK",
    "YARDSTICK_CONFIG",
    "EpochRecord",
    "RetryCause",
    "RetryStaleTrial",
    "Status",
    "TrialRecord",
    "append_epoch",
    "is_yardstick",
    "latest_by_epoch",
    "out_of_retries",
    "read_epochs",
    "response_kinds",
    "retried_numbers",
    "retry_of",
    "status",
    "unreported_epochs",
    "worker_of",
]
