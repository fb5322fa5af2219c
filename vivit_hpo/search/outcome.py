"""How a claimed trial ends in the study: told (with its feasibility constraint), or handed
back (failed, and re-enqueued to resume from its checkpoint) under its cause's retry cap.

:class:`~vivit_hpo.search.objective.TrialRunner` runs the trial and picks the end; this module
tells it to the study, every write retried through a database restart. What ends a trial, and
how:

- COMPLETE: the epoch budget (or the trainer's early stopping) is reached; the value is the best
  epoch's mean validation BPS or correlation (the last report), the epoch whose checkpoint ``study
  export-best`` points at. That checkpoint's test BPS is stored beside it (``test_bps``).
- PRUNED: the pruner stopped it (``prune_reason``). The baseline trial (the base config,
  enqueued first with the user attribute ``baseline``) is never pruned, but its values count
  against the others at every rung.
- infeasible: PRUNED before any training step, with ``infeasible_reason`` and the constraint
  ``feasible`` = 1 (violated). Optuna 5's TPE sorts every trial with a violated constraint into
  its "bad" group whatever its state, so it learns to avoid those regions; PRUNED (not COMPLETE
  with a made-up value) keeps infeasible trials out of every value-based statistic, plot and
  pruner. Complete and pruned trials carry ``feasible`` = 0, set when they end. (GP and CMA-ES
  read COMPLETE trials only, so they do not learn from infeasible ones; random and grid never
  learn.)
- failed in training, with ``fail_reason``: a NaN/Inf loss (``NonFiniteLossError``) or running
  out of memory (``torch.OutOfMemoryError``, or the CPU allocator's equivalent) ends PRUNED with
  ``feasible`` = 1 like an infeasible trial, so that TPE avoids the region too; any other error
  ends FAIL. The worker carries on with the next trial. (:mod:`vivit_hpo.search.record` reads
  these back as ``infeasible`` or ``failed``.)
- enqueued with a value the space cannot take (through Optuna directly, or by a version that
  did not check: ``study enqueue`` refuses them): FAIL before sampling, with ``fail_reason``
  naming the parameter, the value and what it takes.
- interrupted (SIGINT, SIGTERM or SIGHUP to the worker): FAIL with ``fail_reason``, and a
  WAITING copy with the same parameters is enqueued at once; it resumes from the last epoch's
  checkpoint.
- an infrastructure error (:func:`~vivit_hpo.infra.infrastructure_error`: a GPU error, a
  data file missing on this node, a full disk, no permission): the node's fault, not the
  config's, so it is re-enqueued like an interrupted trial (outcome ``REQUEUED``, the reason in
  ``fail_reason``; the retry does not inherit it) and spends no budget. The worker counts them.
- the database down past the give-up time (``$VIVIT_HPO_STORAGE_MAX_WAIT_S``): not the trial's
  fault either: it is handed back like an interrupted trial (outcome ``LOST``), its checkpoints
  kept, once the database answers again; the worker waits for it meanwhile.
- a dead worker: its trial stops beating, is failed by the heartbeat check of any other worker
  or coordinator, and re-enqueued (:class:`~vivit_hpo.search.record.RetryStaleTrial`: reports
  inherited, the pruner's rung state not). The retry renames ``trial-<old>/`` to
  ``trial-<new>/`` (both in the study's ``trials-<uid>/``) and the trainer resumes from
  ``checkpoints/last.pt`` (user attrs ``resumed_from_trial``, ``resumed_from_epoch``).
- stalled (no training step for ``heartbeat.stall_s``: a CUDA hang, a deadlocked data loader;
  :mod:`vivit_hpo.search.watchdog`): an infrastructure error, re-enqueued as above; its worker
  stops (exit 75), since a hung thread stays behind.
- out of retries: each cause of a retry has its own cap per logical trial, counted from its
  record (:func:`~vivit_hpo.search.record.out_of_retries`): ``heartbeat.max_infra_retries`` for
  the node's errors, ``heartbeat.max_interrupt_retries`` for interrupts, ``heartbeat.max_retry``
  for a lost heartbeat. The failure past its cap ends FAIL for good, ``fail_reason`` naming the
  cause, the count, the workers, the last error and the cap to raise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.errors import NonFiniteLossError, VivitHpoError
from vivit_hpo.search.record import (
    FAIL_REASON,
    FEASIBLE,
    INFRASTRUCTURE,
    RESUMED_FROM_TRIAL,
    RETRY_HISTORY,
    RetryCause,
    out_of_retries,
    retry_of,
)
from vivit_hpo.search.signals import StopControl
from vivit_hpo.search.spec import StudySpec
from vivit_hpo.search.storage import (
    claim_lock,
    describe,
    is_transient,
    retrying,
    wait_for_database,
)
from vivit_hpo.search.study import retried_numbers

__all__ = [
    "HandBack",
    "TrialOutcome",
    "drop_checkpoints",
    "frozen_trial",
    "is_oom",
    "record_attrs",
    "retry_trial",
    "set_feasible",
    "tell",
    "training_failure",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str  # COMPLETE, PRUNED, INFEASIBLE, FAIL, REQUEUED (the node's fault), LOST
    value: float | None
    reason: str
    epochs: int
    seconds: float
    infra: bool = False  # the node's fault: REQUEUED, or FAIL once out of infrastructure retries


def is_oom(exc: BaseException) -> bool:
    """True for running out of memory: CUDA's error, the CPU allocator's, or MemoryError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def training_failure(e: Exception, number: int) -> tuple[str, bool]:
    """Why trial ``number``'s training failed with ``e`` (not the node's fault, not the
    database's), and whether the sampled region is to blame (learnable).

    Out of memory and a diverging loss are properties of the sampled region: the trial ends
    PRUNED with its constraint violated, which TPE sorts into its "bad" group (it ignores FAIL).
    Any other error is the code's (logged with its traceback unless it is the project's own):
    FAIL.

    Returns:
        ``(fail_reason, learnable)``.
    """
    if is_oom(e):
        return f"out of memory: {str(e).splitlines()[0][:300]}", True
    if isinstance(e, NonFiniteLossError):
        return f"non-finite loss: {e}", True
    if isinstance(e, VivitHpoError):
        return str(e), False
    _log.exception("trial %d crashed", number)
    detail = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {detail}", False


def record_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set user attributes, each write retried through a database restart.

    A trial writes them in two batches (when training starts, and when it ends) rather than
    every epoch: each is one transaction, and the per-epoch cost is the report alone.
    """
    for key, value in attrs.items():
        retrying(
            functools.partial(trial.set_user_attr, key, value),
            what=f"set {key} of trial {trial.number}",
        )


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    state: TrialState,
    value: float | None = None,
) -> None:
    """Finish the trial as ``state`` (with ``value``), retried through a database restart."""
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        # A retry after a commit whose answer was lost finds the trial finished: fine.
        study.tell(trial, value, state=state, skip_if_finished=attempts > 1)

    retrying(attempt, what=f"tell trial {trial.number} {state.name}")


def set_feasible(trial: optuna.Trial, feasible: bool) -> None:
    """The constraint ``feasible`` (0 kept, 1 violated), set once, when the trial ends: a
    trial learns only by training whether it runs out of memory or diverges."""
    if FEASIBLE not in trial.constraints:
        value = 0.0 if feasible else 1.0
        retrying(lambda: trial.set_constraint(FEASIBLE, value), what="set constraint")


def frozen_trial(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> FrozenTrial:
    """The storage's copy of the trial: a Trial exposes no system attrs, and those carry the
    retry history."""
    return retrying(lambda: storage.get_trial(trial._trial_id), what="read the trial")


def drop_checkpoints(run_dir: Path) -> None:
    """A pruned, infeasible or failed trial will never resume: its checkpoints go now."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def retry_trial(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    trial_id: int,
    reason: str,
    *,
    cause: RetryCause,
    worker: str,
) -> int | None:
    """Enqueue the :func:`~vivit_hpo.search.record.retry_of` copy of a RUNNING trial
    (parameters, reports and retry bookkeeping, ``cause`` on ``worker`` among it; no stale
    reasons or pruner state), then fail it.

    The retry first: a crash between the two leaves the trial RUNNING with its retry waiting,
    which the stale check then only fails (it retries no trial twice); the other order would
    leave it FAIL with no retry, lost. Idempotent, so that :func:`retrying` may run it again:
    a trial that has its retry already is only failed. Call it under the claim lock, so that
    no other process retries the trial meanwhile.

    Returns:
        The trial's number once it is FAIL with its retry waiting, or None if it ended
        otherwise (complete, pruned) before it could be handed back.
    """
    frozen = storage.get_trial(trial_id)
    if frozen.state not in (TrialState.RUNNING, TrialState.FAIL):
        return None
    if frozen.number not in retried_numbers(study.get_trials(deepcopy=False)):
        study.add_trial(retry_of(frozen, cause, worker))
        _log.info("trial %d %s; enqueued a retry", frozen.number, reason)
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    return frozen.number


class HandBack:
    """Hands a worker's trials back to the study: fails each and enqueues its retry (which
    resumes from the trial's checkpoint), or fails it for good once out of retries; and gives a
    retry its predecessor's folder.

    Args:
        spec: the study's spec (its ``heartbeat`` retry caps).
        storage: the study's RDBStorage (the claim lock, the trial's retry history).
        stop: the worker's signal state (a stop ends the wait for the database).
        trial_dir: a trial number's run folder.
        host: this worker's host (the worker is ``host:pid``).
        device: the trials' device (CUDA's cache is emptied after an infrastructure error).
    """

    def __init__(
        self,
        spec: StudySpec,
        storage: optuna.storages.RDBStorage,
        stop: StopControl,
        trial_dir: Callable[[int], Path],
        host: str,
        device: torch.device,
    ) -> None:
        self.spec = spec
        self.storage = storage
        self.stop = stop
        self.trial_dir = trial_dir
        self.host = host
        self.device = device

    def take_over_dir(self, trial: optuna.Trial, frozen: FrozenTrial) -> Path:
        """The trial's folder, made; a retry takes over (renames) its predecessor's, checkpoints
        and all: one rename, however large the checkpoints (the trials share one folder)."""
        out = self.trial_dir(trial.number)
        history = frozen.system_attrs.get(RETRY_HISTORY) or []
        if history and not (out / "checkpoints" / "last.pt").is_file():
            for prev in reversed(history):
                src = self.trial_dir(int(prev))
                if (src / "checkpoints" / "last.pt").is_file():
                    if out.exists():
                        shutil.rmtree(out)  # no checkpoint in it: nothing to keep
                    src.rename(out)
                    record_attrs(trial, {RESUMED_FROM_TRIAL: int(prev)})
                    break
        out.mkdir(parents=True, exist_ok=True)
        return out

    def requeue(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        attrs: dict[str, Any],
        what: str,
        cause: RetryCause,
    ) -> str | None:
        """Record ``attrs`` (``fail_reason`` among them), fail the trial and enqueue its retry,
        which resumes from the trial's last checkpoint (kept: the retry renames the folder).

        Returns:
            None, or why the trial is out of retries for ``cause`` (its cap, the spec's
            ``heartbeat`` section): then it is failed for good, that its ``fail_reason``.
        """
        worker = f"{self.host}:{os.getpid()}"
        cap = self.spec.heartbeat.retry_cap(cause)
        final = out_of_retries(
            frozen_trial(self.storage, trial), cause, cap, str(attrs[FAIL_REASON]), worker
        )
        if final is not None:
            _log.warning("trial %d not retried: %s", trial.number, final)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                record_attrs(trial, {**attrs, FAIL_REASON: final})
                tell(study, trial, TrialState.FAIL)
            drop_checkpoints(self.trial_dir(trial.number))
            return final
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            record_attrs(trial, attrs)

        def requeue() -> None:
            with claim_lock(self.storage, study.study_name):
                retry_trial(study, self.storage, trial._trial_id, what, cause=cause, worker=worker)

        retrying(requeue, what=f"re-enqueue trial {trial.number}")
        return None

    def hand_back(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        reason: str,
        what: str,
        cause: RetryCause,
        *,
        wait: bool = True,
        attrs: dict[str, Any] | None = None,
    ) -> str | None:
        """:meth:`requeue` the trial (``attrs`` and ``fail_reason`` ``reason``); its checkpoints
        stay for the retry. With ``wait``, a database that stays down past the give-up time is
        waited for however long it takes (:func:`wait_for_database`), unless the worker is
        asked to stop; a trial not handed back stays RUNNING, checkpoints and all, and a stale
        check retries it once the database is back.

        Returns:
            What :meth:`requeue` returns (None when the trial was not handed back).
        """
        while True:
            try:
                return self.requeue(
                    study, trial, {**(attrs or {}), FAIL_REASON: reason}, what, cause
                )
            except Exception as err:
                if not is_transient(err):
                    raise
                if wait and wait_for_database(
                    self.storage,
                    what=f"hand trial {trial.number} back",
                    stop=lambda: self.stop.requested,
                ):
                    continue
                _log.warning(
                    "trial %d not handed back (%s); a stale check will retry it",
                    trial.number,
                    describe(err),
                )
                return None

    def infra_outcome(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        reason: str,
        attrs: dict[str, Any],
        epochs: int,
        start: float,
        *,
        free_cuda: bool = True,
    ) -> TrialOutcome:
        """The node failed the trial (:func:`infrastructure_error`): re-enqueue it, unspent
        (``free_cuda``: empty CUDA's cache first; not after a hang, which it may join)."""
        _log.warning("trial %d: infrastructure error, re-enqueued: %s", trial.number, reason)
        if free_cuda and self.device.type == "cuda":
            with contextlib.suppress(Exception):  # a broken context may fail this too
                torch.cuda.empty_cache()
        why = f"infrastructure error (re-enqueued): {reason}"
        # Waits out an outage past the give-up time like any hand-back: a stall or a full disk
        # while the database is down must not crash the worker and leave the trial RUNNING.
        final = self.hand_back(
            study, trial, why, "hit an infrastructure error", INFRASTRUCTURE, attrs=attrs
        )
        seconds = time.perf_counter() - start
        if final is not None:
            return TrialOutcome(trial.number, "FAIL", None, final, epochs, seconds, infra=True)
        return TrialOutcome(trial.number, "REQUEUED", None, reason, epochs, seconds, infra=True)
