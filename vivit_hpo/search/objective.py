"""One trial, from sampled parameters to a told state.

The training loop knows nothing of Optuna: :class:`~vivit_hpo.training.Trainer` yields one
:class:`~vivit_hpo.training.EpochReport` per epoch, and :class:`TrialRunner` turns each into
``trial.report(best_val_score, epoch)`` and ``should_prune``: every report is the best
validation score so far (monotone; the spec's ``objective``: the mean validation BPS, or the
mean per-unit correlation with ``objective: corr``), the same quantity as the trial's final
value, so that the pruner and the sampler compare at each rung what the trial would be worth if
it stopped there. Each epoch's own value stays in the run folder (``epochs.jsonl``'
``val_bps``, ``metrics.json``). What ends a trial, and how:

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

import _thread
import contextlib
import functools
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.config import DataConfig, RunConfig, parse_run_config
from vivit_hpo.data import SessionSet, load_sessions
from vivit_hpo.errors import ConfigError, NonFiniteLossError, VivitHpoError
from vivit_hpo.infra import check_data_here, infrastructure_error
from vivit_hpo.metrics import mean_over_sessions, objective_label
from vivit_hpo.models import count_parameters, flops_per_sample
from vivit_hpo.search.record import (
    BASELINE,
    BEST_EPOCH,
    BINS_PER_S,
    DEVICE,
    EPOCHS_RUN,
    EXTRA_OVERRIDES,
    FAIL_REASON,
    FEASIBLE,
    FIXED_PARAMS,
    FLOPS_PER_SAMPLE,
    HEARTBEAT,
    HOST,
    INFEASIBLE_REASON,
    INFRASTRUCTURE,
    INTERRUPT,
    PARAMS_COUNT,
    PEAK_MEMORY_MB,
    PID,
    PRUNE_REASON,
    RESPONSE_KINDS,
    RESUMED_FROM_EPOCH,
    RESUMED_FROM_TRIAL,
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
    EpochRecord,
    RetryCause,
    append_epoch,
    out_of_retries,
    retry_of,
)
from vivit_hpo.search.space import (
    Infeasible,
    enqueued_problem,
    infeasible_reason,
    input_shapes,
    suggest,
    to_overrides,
    trial_config,
)
from vivit_hpo.search.spec import StudySpec
from vivit_hpo.search.storage import (
    claim_lock,
    describe,
    is_transient,
    retrying,
    wait_for_database,
)
from vivit_hpo.search.study import ensure_data, retried_numbers, trial_dir
from vivit_hpo.search.watchdog import Progress
from vivit_hpo.training import Trainer, epoch_score, resolve_device
from vivit_hpo.training.run import score_best

__all__ = [
    "STOP_SIGNALS",
    "StopControl",
    "TrialLost",
    "TrialOutcome",
    "TrialRunner",
    "TrialStalled",
    "is_oom",
    "memory_cap_bytes",
    "record_attrs",
    "retry_trial",
    "unreported_epochs",
]

_log = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOST_SIGNAL = signal.SIGUSR1  # StopControl.abandon's own, raised in the process itself


class TrialLost(BaseException):
    """The running trial was given up by its own worker: its heartbeat could not be written
    for so long that another process may soon fail it as stale and resume it elsewhere."""


class TrialStalled(BaseException):
    """The running trial made no training progress for ``heartbeat.stall_s`` (a hang: see
    :mod:`vivit_hpo.search.watchdog`); the node's fault, not the config's."""


class StopControl:
    """Turns SIGINT, SIGTERM and SIGHUP into a clean stop (Ctrl-C, ``docker stop``, SLURM's
    preemption or time-limit signal, a closed terminal), and a lost heartbeat into the stop of
    the running trial alone.

    While training (inside :meth:`interruptible`) a signal raises ``KeyboardInterrupt`` at once;
    anywhere else (a storage call half done) it only sets :attr:`requested`, which the worker
    checks at the next safe point. A second signal during the cleanup is ignored.
    """

    def __init__(self) -> None:
        self.requested = False
        self.lost: str | None = None  # why the running trial was given up (see abandon)
        self.stalled: str | None = None  # why the running trial is stalled (see stall)
        self.stall_taken = threading.Event()  # set when TrialStalled was raised in the trial
        self._interruptible = False
        self._installed = False

    @property
    def installed(self) -> bool:
        """Whether the handlers are installed (this process is a worker of its own)."""
        return self._installed

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        signal.signal(LOST_SIGNAL, self._handle_lost)
        self._installed = True

    def abandon(self, reason: str) -> None:
        """Give up the running trial (from any thread): :class:`TrialLost` is raised in the
        main thread at once while it trains, else when it next enters :meth:`interruptible`.
        Its own signal, so that a stop signal arriving meanwhile is never taken for it."""
        self.lost = reason
        if self._installed:
            _thread.interrupt_main(LOST_SIGNAL)  # runs _handle_lost in the main thread

    def stall(self, reason: str) -> None:
        """Stop the running trial as stalled (from the watchdog's thread): :class:`TrialStalled`
        is raised in the main thread while it trains. A real signal to the main thread, not
        ``interrupt_main``, so that a blocking wait there (a lock, a queue) is woken too."""
        self.stalled = reason
        if self._installed and (ident := threading.main_thread().ident) is not None:
            signal.pthread_kill(ident, LOST_SIGNAL)

    def _raise_given_up(self) -> None:
        if self.stalled is not None:
            self.stall_taken.set()
            raise TrialStalled(self.stalled)
        if self.lost is not None:
            raise TrialLost(self.lost)

    def _handle_lost(self, signum: int, frame: FrameType | None) -> None:
        # Only abandon()'s and stall()'s (a stray SIGUSR1 with no trial given up is ignored);
        # outside training, interruptible() raises it next time.
        if (self.lost is not None or self.stalled is not None) and self._interruptible:
            self._interruptible = False
            self._raise_given_up()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested
        self.requested = True
        if first:
            _log.warning("stop requested (%s)", signal.Signals(signum).name)
        if self._interruptible:
            self._interruptible = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.requested:
            raise KeyboardInterrupt
        self._raise_given_up()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


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


def memory_cap_bytes(spec: StudySpec, device: torch.device) -> int:
    """The memory a trial may use: ``feasibility.max_memory_gb``, else the device's total (GPU)
    or physical RAM (CPU), times ``feasibility.memory_fraction``."""
    f = spec.feasibility
    if f.max_memory_gb is not None:
        return int(f.max_memory_gb * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * f.memory_fraction)


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


def unreported_epochs(
    history: list[dict[str, Any]], reported: dict[int, float]
) -> list[tuple[int, float]]:
    """(epoch, best validation score so far) of each epoch of a resumed run's ``history`` (its
    ``metrics.json`` rows) that the trial has no report of.

    A trainer writes an epoch's checkpoint before the trial reports it, so a worker killed
    between the two leaves an epoch that only the checkpoint knows; its retry reports it on
    resuming, so that the trial's curve has every epoch it trained.
    """
    out, best = [], -math.inf
    for row in history:
        best = max(best, epoch_score(row))
        if int(row["epoch"]) not in reported:
            out.append((int(row["epoch"]), best))
    return out


def _frozen(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> FrozenTrial:
    # Trial exposes no system attrs; the storage's copy carries the retry history.
    return retrying(lambda: storage.get_trial(trial._trial_id), what="read the trial")


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


def _yardstick_config(tree: Any, name: str) -> RunConfig:
    """The run config a yardstick trial stored when it was enqueued.

    Raises:
        ConfigError: none stored, or not a valid run config.
    """
    if not isinstance(tree, dict):
        raise ConfigError(f"yardstick {name}: no run config stored; recreate the study")
    return parse_run_config(tree, f"yardstick {name}")


class TrialRunner:
    """Runs trials of one study in one worker process.

    Args:
        spec: the study's spec (as stored in the study).
        study_name: the study's name (its artifact folder).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:i``.
        storage: the study's RDBStorage (for the claim lock taken while re-enqueueing an
            interrupted trial; the worker runs the heartbeat).
        stop: the worker's signal state.
        uid: the study's uid (:func:`~vivit_hpo.search.study.study_uid`): its trial folders.
        finish_by: a wall-clock time (``time.time()``): a trial whose next epoch would end
            after it stops after this one and completes with its best epoch so far
            (``stopped_at_deadline``), so that a search given M minutes ends its running trials
            with a result by then (``vivit-hpo bench models``). None: trials run their budget.
    """

    def __init__(
        self,
        spec: StudySpec,
        study_name: str,
        device: str,
        *,
        storage: optuna.storages.RDBStorage,
        stop: StopControl,
        uid: str | None,
        finish_by: float | None = None,
    ) -> None:
        self.spec = spec
        self.finish_by = finish_by
        self.study_name = study_name
        self.uid = uid
        self.device = resolve_device(device)
        self.storage = storage
        self.stop = stop
        self.base = spec.base_tree()
        self.shapes = input_shapes(spec)
        self.memory_cap = memory_cap_bytes(spec, self.device)
        self.host = socket.gethostname()
        self.progress = Progress()  # marked by every training step (the worker's StallWatchdog)
        self._data: tuple[DataConfig, SessionSet] | None = None

    # -- helpers --------------------------------------------------------------------------------

    def _sessions(self, cfg: DataConfig) -> SessionSet:
        """The study's sessions, loaded once per distinct data config in this process."""
        if self._data is None or self._data[0] != cfg:
            self._data = None  # free the old set before loading another
            paths = ensure_data(self.spec, self.study_name)
            check_data_here(paths)  # missing here is the node's fault, not a bad data file
            self._data = (cfg, load_sessions(paths, cfg))
        return self._data[1]

    def _trial_dir(self, number: int) -> Path:
        return trial_dir(self.spec, self.study_name, number, uid=self.uid)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def _prepare_dir(self, trial: optuna.Trial, frozen: FrozenTrial) -> Path:
        """The trial's folder; a retry takes over (renames) its predecessor's, checkpoints and
        all: one rename, however large the checkpoints (the trials share one folder)."""
        out = self._trial_dir(trial.number)
        history = frozen.system_attrs.get(RETRY_HISTORY) or []
        if history and not (out / "checkpoints" / "last.pt").is_file():
            for prev in reversed(history):
                src = self._trial_dir(int(prev))
                if (src / "checkpoints" / "last.pt").is_file():
                    if out.exists():
                        shutil.rmtree(out)  # no checkpoint in it: nothing to keep
                    src.rename(out)
                    record_attrs(trial, {RESUMED_FROM_TRIAL: int(prev)})
                    break
        out.mkdir(parents=True, exist_ok=True)
        return out

    @staticmethod
    def _tell(
        study: optuna.Study,
        trial: optuna.Trial,
        state: TrialState,
        value: float | None = None,
    ) -> None:
        attempts = 0

        def tell() -> None:
            nonlocal attempts
            attempts += 1
            # A retry after a commit whose answer was lost finds the trial finished: fine.
            study.tell(trial, value, state=state, skip_if_finished=attempts > 1)

        retrying(tell, what=f"tell trial {trial.number} {state.name}")

    @staticmethod
    def _set_feasible(trial: optuna.Trial, feasible: bool) -> None:
        """The constraint ``feasible`` (0 kept, 1 violated), set once, when the trial ends: a
        trial learns only by training whether it runs out of memory or diverges."""
        if FEASIBLE not in trial.constraints:
            value = 0.0 if feasible else 1.0
            retrying(lambda: trial.set_constraint(FEASIBLE, value), what="set constraint")

    def _record_epoch(
        self, run_dir: Path, number: int, epoch: int, began: float, val_bps: float
    ) -> None:
        """Who trained the epoch (this worker, ``host:pid``), when, and its own validation BPS,
        in the run folder; a record that cannot be written never fails the trial."""
        record = EpochRecord(
            number, epoch, f"{self.host}:{os.getpid()}", began, time.time(), val_bps=val_bps
        )
        try:
            append_epoch(run_dir, record)
        except OSError as e:
            _log.warning("trial %d: epoch %d not recorded: %s", number, epoch, e)

    def _requeue(
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
            _frozen(self.storage, trial), cause, cap, str(attrs[FAIL_REASON]), worker
        )
        if final is not None:
            _log.warning("trial %d not retried: %s", trial.number, final)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                record_attrs(trial, {**attrs, FAIL_REASON: final})
                self._tell(study, trial, TrialState.FAIL)
            self._drop_checkpoints(trial.number)
            return final
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            record_attrs(trial, attrs)

        def requeue() -> None:
            with claim_lock(self.storage, study.study_name):
                retry_trial(study, self.storage, trial._trial_id, what, cause=cause, worker=worker)

        retrying(requeue, what=f"re-enqueue trial {trial.number}")
        return None

    def _stepped(self, batch: int, batches: int) -> None:
        self.progress.mark()

    def hand_back_stalled(self, study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
        """Re-enqueue a stalled trial whose main thread hangs where no signal reaches it (from
        the watchdog's thread, before the worker exits): the node's fault, under its cap."""
        self._infra_outcome(study, trial, reason, {}, 0, time.perf_counter(), free_cuda=False)

    def _hand_back(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        reason: str,
        what: str,
        cause: RetryCause,
        *,
        wait: bool = True,
    ) -> None:
        """:meth:`_requeue` the trial (``fail_reason`` ``reason``); its checkpoints stay for the
        retry. With ``wait``, a database that stays down past the give-up time is waited for
        however long it takes (:func:`wait_for_database`), unless the worker is asked to stop;
        a trial not handed back stays RUNNING, checkpoints and all, and a stale check retries
        it once the database is back."""
        while True:
            try:
                self._requeue(study, trial, {FAIL_REASON: reason}, what, cause)
                return
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
                return

    def _infra_outcome(
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
        final = self._requeue(
            study, trial, {**attrs, FAIL_REASON: why}, "hit an infrastructure error", INFRASTRUCTURE
        )
        seconds = time.perf_counter() - start
        if final is not None:
            return TrialOutcome(trial.number, "FAIL", None, final, epochs, seconds, infra=True)
        return TrialOutcome(trial.number, "REQUEUED", None, reason, epochs, seconds, infra=True)

    def _drop_checkpoints(self, number: int) -> None:
        """A pruned, infeasible or failed trial will never resume: its checkpoints go now."""
        shutil.rmtree(self._trial_dir(number) / "checkpoints", ignore_errors=True)

    # -- one trial ------------------------------------------------------------------------------

    def run(self, study: optuna.Study, trial: optuna.Trial) -> TrialOutcome:
        """Sample, check, train and tell one claimed trial (already RUNNING).

        An infrastructure error ends it ``REQUEUED``: failed and re-enqueued (see
        :func:`~vivit_hpo.infra.infrastructure_error`).

        Raises:
            KeyboardInterrupt: the worker was asked to stop; the trial has been failed and
                re-enqueued to resume from its checkpoint.
        """
        start = time.perf_counter()
        self.stop.lost = self.stop.stalled = None
        self.stop.stall_taken.clear()
        frozen = _frozen(self.storage, trial)
        try:
            return self._run(study, trial, frozen, start)
        except TrialStalled as e:
            # Hung (the watchdog woke this thread): the node's fault; the worker stops after.
            return self._infra_outcome(study, trial, str(e), {}, 0, start, free_cuda=False)
        except TrialLost as e:
            # Before anyone may call it stale: hand it back once the database answers again
            # (stale checks wait a grace period after an outage, so this comes first).
            _log.warning("trial %d given up: %s", trial.number, e)
            self._hand_back(
                study, trial, f"lost its heartbeat: {e}", "lost its heartbeat", HEARTBEAT
            )
            return TrialOutcome(trial.number, "LOST", None, str(e), 0, time.perf_counter() - start)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another process failed this trial as stale (our heartbeat could not reach the
            # database for longer than the grace period); its retry carries on.
            _log.warning("trial %d was failed by another process; dropping it", trial.number)
            return TrialOutcome(
                trial.number,
                "LOST",
                None,
                "failed as stale elsewhere",
                0,
                time.perf_counter() - start,
            )
        except KeyboardInterrupt:
            reason = "interrupted: the worker was stopped; resumes from its last checkpoint"
            self._hand_back(study, trial, reason, "was interrupted", INTERRUPT, wait=False)
            raise
        except Exception as e:
            if is_transient(e):
                # The database stayed down past the give-up time: not the trial's fault.
                why = f"the database was unreachable ({describe(e)}); resumes from its checkpoint"
                _log.warning("trial %d stopped: %s", trial.number, why)
                self._hand_back(study, trial, why, "lost the database", INTERRUPT)
                return TrialOutcome(trial.number, "LOST", None, why, 0, time.perf_counter() - start)
            # The node's fault outside training (the trial's folder cannot be made, say).
            infra = infrastructure_error(e)
            if infra is None:
                raise
            return self._infra_outcome(study, trial, infra, {}, 0, start)

    def _run(
        self, study: optuna.Study, trial: optuna.Trial, frozen: FrozenTrial, start: float
    ) -> TrialOutcome:
        n = trial.number
        attrs: dict[str, Any] = {HOST: self.host, DEVICE: self._device_name()}
        attrs[PID] = os.getpid()
        if self.device.type == "cpu":
            attrs[THREADS] = torch.get_num_threads()

        # 1. Parameters and the cheap checks: nothing is trained for an infeasible config.
        # A yardstick samples nothing: it trains the run config stored when it was enqueued
        # (checked against the data when the study was created), and is never pruned.
        yardstick = trial.user_attrs.get(YARDSTICK)
        baseline = bool(trial.user_attrs.get(BASELINE))
        if yardstick:
            try:
                cfg = _yardstick_config(trial.user_attrs.get(YARDSTICK_CONFIG), str(yardstick))
            except VivitHpoError as e:
                record_attrs(trial, {**attrs, FAIL_REASON: str(e)})
                self._tell(study, trial, TrialState.FAIL)
                return TrialOutcome(n, "FAIL", None, str(e), 0, time.perf_counter() - start)
            attrs[VALUES] = {}
        else:
            # Values enqueued without `study enqueue`'s checks (by Optuna directly, or an older
            # version) that the space cannot take would make Optuna raise mid-suggest.
            bad = enqueued_problem(self.spec.space, frozen.system_attrs.get(FIXED_PARAMS) or {})
            if bad is not None:
                why = f"enqueued with a value the space cannot take: {bad}"
                record_attrs(trial, {**attrs, FAIL_REASON: why})
                self._tell(study, trial, TrialState.FAIL)
                return TrialOutcome(n, "FAIL", None, why, 0, time.perf_counter() - start)
            extra = dict(trial.user_attrs.get(EXTRA_OVERRIDES) or {})
            try:
                values = retrying(lambda: suggest(trial, self.spec.space), what=f"sample trial {n}")
                reason = infeasible_reason(
                    self.spec,
                    self.base,
                    values,
                    self.shapes,
                    memory_cap_bytes=self.memory_cap,
                    device_type=self.device.type,
                    extra=extra,
                )
            except Infeasible as e:
                values, reason = {}, str(e)
            attrs[VALUES] = values
            if reason is not None:
                record_attrs(trial, {**attrs, INFEASIBLE_REASON: reason})
                self._set_feasible(trial, False)
                self._tell(study, trial, TrialState.PRUNED)
                return TrialOutcome(n, "INFEASIBLE", None, reason, 0, time.perf_counter() - start)
            cfg = trial_config(self.base, to_overrides(self.spec.space, values), extra)
        attrs[RUN_CONFIG] = cfg.to_dict()

        # 2. Train, reporting every epoch (the worker runs the heartbeat alongside).
        run_dir = self._prepare_dir(trial, frozen)
        attrs[TRIAL_DIR] = str(run_dir)
        end: dict[str, Any] = {}
        epochs = 0
        try:
            with self.stop.interruptible():
                data = self._sessions(cfg.data)
                trainer = Trainer(
                    cfg, data, device=self.device, run_dir=run_dir, on_step=self._stepped
                )
            shape = trainer.data.input_shape(data.metas[0].name)
            attrs[RESPONSE_KINDS] = {m.name: m.response_kind for m in data.metas}
            attrs[PARAMS_COUNT] = count_parameters(trainer.model)
            attrs[FLOPS_PER_SAMPLE] = float(
                flops_per_sample(cfg.model, shape, num_lags=cfg.data.num_lags)
            )
            if trainer.epoch:
                attrs[RESUMED_FROM_EPOCH] = trainer.epoch
            record_attrs(trial, attrs)
            for epoch, best in unreported_epochs(trainer.history, frozen.intermediate_values):
                retrying(
                    functools.partial(trial.report, best, epoch),
                    what=f"report epoch {epoch} of trial {n}",
                )
            peak = 0.0
            reports = trainer.epochs()
            while True:
                began = time.time()
                with self.stop.interruptible():
                    report = next(reports, None)
                if report is None:
                    break
                self.progress.mark()
                self._record_epoch(run_dir, n, report.epoch, began, report.val_bps)
                epochs = report.epoch
                peak = max(peak, report.peak_memory_mb)
                end.update(
                    {
                        SAMPLES_PER_S: report.samples_per_s,
                        BINS_PER_S: report.bins_per_s,
                        PEAK_MEMORY_MB: peak,
                    }
                )
                end[EPOCHS_RUN] = report.epoch
                if report.is_best:
                    end[BEST_EPOCH] = report.epoch
                    end[VAL_BPS] = report.val_bps
                    end[VAL_BPS_PER_SESSION] = report.val_bps_per_session
                    if math.isfinite(report.val_corr):
                        end[VAL_CORR] = report.val_corr
                # The best so far, not this epoch's: the value the trial ends with if it stops
                # here (trainer.best_score includes a resumed run's earlier epochs).
                best = trainer.best_score
                retrying(
                    functools.partial(trial.report, best, report.epoch),
                    what=f"report epoch {report.epoch} of trial {n}",
                )
                if self.stop.requested:
                    raise KeyboardInterrupt
                if self._past_deadline(time.time() - began):
                    end[STOPPED_AT_DEADLINE] = True
                    break
                if yardstick:
                    continue  # not the search's: the pruner never sees it (factory)
                # Every trial asks the pruner, so that the baseline's values stand at each rung
                # (Hyperband records a trial's rung value only when asked). The baseline is never
                # pruned: it is the result the search must at least match, so it trains to the
                # end like a hand-written run.
                prune = retrying(trial.should_prune, what=f"should_prune trial {n}")
                if prune and not baseline:
                    why = (
                        f"pruned by {self.spec.pruner.name} after epoch {report.epoch}: "
                        f"best val {self._label(data)} {best:+.4f}"
                    )
                    record_attrs(trial, {**end, PRUNE_REASON: why})
                    self._set_feasible(trial, True)
                    self._tell(study, trial, TrialState.PRUNED)
                    self._drop_checkpoints(n)
                    return TrialOutcome(n, "PRUNED", None, why, epochs, time.perf_counter() - start)
        except (KeyboardInterrupt, optuna.exceptions.UpdateFinishedTrialError):
            # Interrupted: the epoch's figures go with the trial that will resume it.
            with contextlib.suppress(Exception):
                record_attrs(trial, end)
            raise
        except Exception as e:
            if is_transient(e):
                raise  # the database's fault, not the trial's: run() hands the trial back
            # The node's fault (a GPU error, data missing here, a full disk): not the config's.
            infra = None if is_oom(e) else infrastructure_error(e)
            if infra is not None:
                return self._infra_outcome(study, trial, infra, {**attrs, **end}, epochs, start)
            # Out of memory and a diverging loss are properties of the sampled region: the trial
            # ends PRUNED with its constraint violated, which TPE sorts into its "bad" group
            # (it ignores FAIL). Any other error is the code's: FAIL.
            learnable = True
            if is_oom(e):
                why = f"out of memory: {str(e).splitlines()[0][:300]}"
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            elif isinstance(e, NonFiniteLossError):
                why = f"non-finite loss: {e}"
            else:
                learnable = False
                if isinstance(e, VivitHpoError):
                    why = str(e)
                else:
                    _log.exception("trial %d crashed", n)
                    detail = str(e).splitlines()[0][:300] if str(e) else ""
                    why = f"{type(e).__name__}: {detail}"
            record_attrs(trial, {**attrs, **end, FAIL_REASON: why})
            if learnable:
                self._set_feasible(trial, False)
            self._tell(study, trial, TrialState.PRUNED if learnable else TrialState.FAIL)
            self._drop_checkpoints(n)
            return TrialOutcome(n, "FAIL", None, why, epochs, time.perf_counter() - start)

        # 3. Done: the best epoch's score is the value.
        value = trainer.best_score
        if trainer.best_epoch is not None:
            end[BEST_EPOCH] = trainer.best_epoch
        end[STOPPED_EARLY] = trainer.stopped_early
        if not math.isfinite(value):
            why = f"no finite validation {self._label(data)} after {trainer.epoch} epochs"
            record_attrs(trial, {**end, FAIL_REASON: why})
            self._tell(study, trial, TrialState.FAIL)
            return TrialOutcome(n, "FAIL", None, why, epochs, time.perf_counter() - start)
        with self.stop.interruptible():
            end.update(self._test_scores(run_dir, data, cfg.train.batch_size))
        record_attrs(trial, end)
        self._set_feasible(trial, True)
        self._tell(study, trial, TrialState.COMPLETE, value)
        return TrialOutcome(n, "COMPLETE", value, "", epochs, time.perf_counter() - start)

    def _label(self, data: SessionSet) -> str:
        """The name of the study's objective on these sessions (``BPS``, ``r``...)."""
        kinds = [m.response_kind for m in data.metas]
        return objective_label(self.spec.objective.name, kinds, header=True)

    def _past_deadline(self, epoch_seconds: float) -> bool:
        """True when another epoch as long as the last would end after ``finish_by``."""
        return self.finish_by is not None and time.time() + epoch_seconds > self.finish_by

    def _test_scores(self, run_dir: Path, data: SessionSet, batch_size: int) -> dict[str, Any]:
        """The kept best checkpoint's test BPS (``test_bps``, ``test_bps_per_session``; scored as
        ``vivit-hpo train`` scores it, :func:`~vivit_hpo.training.run.score_best`), so that
        a user sees when selection on the validation split flatters the winner. Nothing when
        the sessions have no test split; ``test_bps_error`` when it cannot be scored."""
        if not data.num_samples("test"):
            return {}
        try:
            scores = score_best(run_dir, data, ["test"], self.device, batch_size=batch_size)["test"]
        except Exception as e:  # the trial's value stands; the attribute says what went wrong
            _log.warning("trial in %s: test split not scored: %s", run_dir, e)
            return {TEST_BPS_ERROR: f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        # Sessions without a valid test spike are left out, as in validation.
        test = mean_over_sessions(scores)
        out: dict[str, Any] = {TEST_BPS: test.bps, TEST_BPS_PER_SESSION: test.per_session}
        if math.isfinite(test.corr):
            out[TEST_CORR] = test.corr
        return out
