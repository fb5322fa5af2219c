"""A worker: a process that pulls trials of one study until its budget is spent.

Run as many as there are devices, on any machine that reaches the database
(``vivit-hpo worker NAME --storage URL --device cuda:0``). Each one:

1. reads the spec stored in the study and builds the sampler and pruner from it;
2. claims a trial under the study's claim lock: first it fails stale trials (dead workers'; they
   are re-enqueued), then it takes a WAITING trial (a retry or an enqueued one) if there is one,
   else it creates a new trial if the budget allows, and records the trial's first heartbeat;
3. runs it (:class:`~vivit_hpo.search.objective.TrialRunner`) with a heartbeat thread; after
   a trial completes, the checkpoints of complete trials behind the ``artifacts.keep_best`` best
   go (pruned, infeasible and failed trials drop theirs when they end);
4. repeats. When the budget is allocated but other workers' trials still run, it waits (checking
   for stale trials every heartbeat interval) so that a trial whose worker dies is retried; it
   exits when nothing is running or waiting.

A database that stays down past the give-up time (:func:`~vivit_hpo.search.storage.retrying`)
is no trial's fault: the running trial is handed back to resume from its checkpoint once the
database answers, and the worker waits for it (one log line a minute) instead of exiting.

A trial that fails because of this node (:mod:`vivit_hpo.infra`: a GPU error, data
missing here, a full disk) is re-enqueued, not spent; after ``max_infra_errors`` of them in a
row (a trial that trains resets the count) the worker stops (``stopped_by`` ``infrastructure``,
the reason in ``infra_reason``): the node must be fixed, and its trials resume elsewhere. A worker
that cannot read the study's data files here stops the same way before it claims any trial, and
one whose trial stalled (``heartbeat.stall_s`` without a training step) stops at once. A trial
out of its retries for a cause (``heartbeat.max_infra_retries``...) ends FAIL instead.

The budget counts trials that ended (COMPLETE, PRUNED, infeasible, FAIL without a retry) or are
running or waiting; a failure that was retried is counted once, through its retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import optuna
import torch

from vivit_hpo.errors import DataUnavailableError
from vivit_hpo.infra import (
    DEFAULT_MAX_INFRA_ERRORS,
    INFRA_EXIT_CODE,
    check_data_here,
    stop_message,
)
from vivit_hpo.search.artifacts import ensure_data, prune_checkpoints, study_uid
from vivit_hpo.search.devices import ENV_GPU_LOCK_DIR as ENV_GPU_LOCK_DIR
from vivit_hpo.search.devices import claim_gpu, gpu_lock_dir
from vivit_hpo.search.factory import build_pruner, build_sampler
from vivit_hpo.search.objective import TrialRunner
from vivit_hpo.search.outcome import TrialOutcome
from vivit_hpo.search.progress import progress
from vivit_hpo.search.signals import StopControl
from vivit_hpo.search.spec import StudySpec, study_n_trials
from vivit_hpo.search.storage import (
    CONNECT_WAIT_S,
    Heartbeat,
    StaleCheck,
    claim_lock,
    describe,
    is_transient,
    open_storage,
    retrying,
    wait_for_database,
)
from vivit_hpo.search.study import load_study, read_spec
from vivit_hpo.search.watchdog import StallWatchdog

__all__ = [
    "OpenStudy",
    "WorkerSummary",
    "claim_gpu",
    "claim_trial",
    "gpu_lock_dir",
    "open_study",
    "run_worker",
]

_log = logging.getLogger(__name__)


@dataclass
class WorkerSummary:
    trials: int = 0
    states: Counter[str] = field(default_factory=Counter)
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stopped_by: str = ""  # budget, n_trials, timeout, signal, infrastructure
    infra_reason: str = ""  # the last infrastructure error, when stopped_by is infrastructure
    infra_errors: int = 0  # infrastructure errors in a row when it stopped


@dataclass(frozen=True)
class OpenStudy:
    """A study as a worker or ``run`` holds it for its whole life: the storage (with the
    spec's heartbeat), the study (with the spec's sampler and pruner), the spec and its uid."""

    storage: optuna.storages.RDBStorage
    study: optuna.Study
    spec: StudySpec
    uid: str | None

    def close(self) -> None:
        self.storage.engine.dispose()


def open_study(study_name: str, storage_url: str | None) -> OpenStudy:
    """Open study ``study_name`` once for this process (see :class:`OpenStudy`).

    The spec stored in the study says how its storage is opened (the heartbeat), so it is read
    first, through a plain connection that is closed at once. A process started during an
    outage waits for the server (:data:`~vivit_hpo.search.storage.CONNECT_WAIT_S`), at both
    opens: the outage may begin between them.

    Raises:
        StorageError: bad URL or unreachable database. StudyError: no such study.
    """
    plain = open_storage(storage_url, connect_wait_s=CONNECT_WAIT_S)
    try:
        spec = retrying(lambda: read_spec(plain, study_name), what="read the spec")
    finally:
        plain.engine.dispose()
    hb = spec.heartbeat
    storage = open_storage(
        storage_url,
        heartbeat_interval=hb.interval_s,
        grace_period=hb.grace_s,
        max_retry=hb.max_retry,
        connect_wait_s=CONNECT_WAIT_S,
    )
    study = retrying(
        lambda: load_study(
            storage, study_name, sampler=build_sampler(spec), pruner=build_pruner(spec)
        ),
        what="load the study",
    )
    uid = retrying(lambda: study_uid(study), what="read the study's uid")
    return OpenStudy(storage, study, spec, uid)


def claim_trial(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    n_trials: int,
    *,
    stale: StaleCheck | None = None,
) -> optuna.Trial | str:
    """Claim the next trial, or say why there is none.

    Under the study's claim lock: fail stale trials (``stale``, when the storage has a
    heartbeat; they are re-enqueued), count, then pop a WAITING trial or create one within the
    budget, and record its first heartbeat. Call it through :func:`retrying`: a claim whose
    commit answer was lost leaves a trial without a heartbeat, which ``stale`` fails and
    retries after a grace period, so the budget still counts it once.

    Returns:
        The trial (RUNNING), or ``"wait"`` (budget allocated, other trials still running) or
        ``"done"`` (budget allocated, nothing running or waiting).
    """
    with claim_lock(storage, study.study_name):
        if stale is not None:
            stale(study)
        p = progress(study.get_trials(deepcopy=False), n_trials)
        if p.waiting == 0 and p.logical >= n_trials:
            return "wait" if p.running else "done"
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for optimize(); this loop runs its own.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if storage.heartbeat_interval is not None:
            # Only the beat is retried here: retrying the whole claim would claim another trial.
            trial_id = trial._trial_id
            retrying(lambda: storage.record_heartbeat(trial_id), what="first heartbeat")
    return trial


@contextlib.contextmanager
def _watched(
    spec: StudySpec,
    storage: optuna.storages.RDBStorage,
    study: optuna.Study,
    trial: optuna.Trial,
    runner: TrialRunner,
    stop: StopControl,
) -> Iterator[None]:
    """The trial's heartbeat, and the progress watchdog that stops it vouching for a trial that
    stalled (``heartbeat.stall_s``; see :mod:`~vivit_hpo.search.watchdog`)."""
    hb = spec.heartbeat
    beat = Heartbeat(
        storage,
        trial._trial_id,
        hb.interval_s,
        lost_after_s=hb.grace_s - hb.interval_s,
        on_lost=stop.abandon,
    )

    def on_stall(reason: str) -> None:
        beat.silence()
        stop.stall(reason)

    def on_hung(reason: str) -> None:
        # Hung where no signal reaches (inside a CUDA call): hand the trial back from here,
        # before any other process calls it stale, and end the process (when it is ours).
        try:
            runner.hand_back_stalled(study, trial, reason)
        except Exception as e:
            _log.error("stalled trial %d not handed back (%s)", trial.number, describe(e))
        if stop.installed:
            print(f"error: {stop_message(reason, 1)}", file=sys.stderr, flush=True)
            logging.shutdown()
            os._exit(INFRA_EXIT_CODE)

    watchdog = StallWatchdog(
        runner.progress,
        hb.stall_s,
        on_stall=on_stall,
        answered=stop.stall_taken,
        on_hung=on_hung,
        answer_s=float(hb.interval_s),
    )
    with beat, watchdog:
        yield


def _prune(study: optuna.Study, storage: optuna.storages.RDBStorage, spec: StudySpec) -> None:
    """Keep the checkpoints of the ``artifacts.keep_best`` best complete trials only, now."""
    with claim_lock(storage, study.study_name):  # no trial is failed and retried meanwhile
        removed = prune_checkpoints(study, spec)
    if removed:
        _log.info("removed the checkpoints of %d trial(s) behind the best", len(removed))


def run_worker(
    study_name: str,
    storage_url: str | None = None,
    n_trials: int | None = None,
    device: str = "auto",
    *,
    install_signals: bool = True,
    max_infra_errors: int = DEFAULT_MAX_INFRA_ERRORS,
    finish_by: float | None = None,
) -> WorkerSummary:
    """Pull and run trials of ``study_name`` until the study's budget is spent.

    Args:
        study_name: the study (created with ``vivit-hpo study create``).
        storage_url: the storage; None: ``$VIVIT_HPO_STORAGE`` or the embedded default.
        n_trials: stop after this many trials of this worker (None: no own limit).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:i`` or ``cuda:any`` (a GPU no other worker
            on this machine holds); every CUDA device is locked, see :func:`claim_gpu`.
        install_signals: turn SIGINT, SIGTERM and SIGHUP into a clean stop (main thread only).
        max_infra_errors: stop after this many infrastructure errors in a row (>= 1).
        finish_by: a wall-clock time (``time.time()``): no trial is claimed after it, and the
            running one completes with its best epoch when its next epoch would end after it
            (see :class:`~vivit_hpo.search.objective.TrialRunner`).

    Returns:
        What this worker ran and why it stopped. A stop by signal fails the running trial and
        re-enqueues it to resume from its last checkpoint.
    """
    opened = open_study(study_name, storage_url)
    storage, study, spec = opened.storage, opened.study, opened.spec
    try:
        # The study's files were there when it was created: missing here is this node's fault.
        check_data_here(ensure_data(spec, study_name))
    except DataUnavailableError as e:
        opened.close()
        return WorkerSummary(stopped_by="infrastructure", infra_reason=str(e))
    if device == "auto" and torch.cuda.is_available():
        device = "cuda"
    if device.startswith("cuda"):
        # cuda:any or an explicit GPU: the same lock, so that no two workers share a GPU.
        device = claim_gpu(device, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    stop = StopControl()
    if install_signals:
        stop.install()
    # The first load of every trial, outside the claim lock: the study's cache then only fetches
    # what changed, and the claims that hold the lock stay short however large the study.
    retrying(lambda: study.get_trials(deepcopy=False), what="load the study's trials")
    stale = StaleCheck(storage)
    runner = TrialRunner(
        spec, study_name, device, storage=storage, stop=stop, uid=opened.uid, finish_by=finish_by
    )
    budget = study_n_trials(spec)
    timeout = spec.budget.timeout_minutes
    deadline = time.monotonic() + timeout * 60 if timeout else None
    summary = WorkerSummary()
    in_row = 0  # infrastructure errors since the last trial that trained
    _log.info(
        "worker for study %r on %s: budget %d trials, heartbeat every %d s",
        study_name,
        runner.device,
        budget,
        spec.heartbeat.interval_s,
    )
    try:
        while True:
            if stop.requested:
                summary.stopped_by = "signal"
                break
            if n_trials is not None and summary.trials >= n_trials:
                summary.stopped_by = "n_trials"
                break
            if deadline is not None and time.monotonic() > deadline:
                summary.stopped_by = "timeout"
                break
            if finish_by is not None and time.time() > finish_by:
                summary.stopped_by = "timeout"
                break
            try:
                got = retrying(
                    lambda: claim_trial(study, storage, budget, stale=stale), what="claim a trial"
                )
            except Exception as e:
                if not is_transient(e):
                    raise
                # Down past the give-up time: wait for it (the loop's checks run next).
                wait_for_database(storage, what="claim a trial", stop=lambda: stop.requested)
                continue
            if got == "done":
                summary.stopped_by = "budget"
                break
            if got == "wait":
                # Stay while others run: if one of them dies, its retry needs a worker.
                time.sleep(min(spec.heartbeat.interval_s, 5.0))
                continue
            assert isinstance(got, optuna.Trial)
            if summary.trials == 0:
                # Its own random stream (see worker_seed); sampling starts after the claim.
                study.sampler = build_sampler(spec, first_trial=got.number)
            with _watched(spec, storage, study, got, runner, stop):
                outcome = runner.run(study, got)
            summary.trials += 1
            summary.states[outcome.state] += 1
            summary.outcomes.append(outcome)
            if outcome.state == "COMPLETE":
                try:
                    retrying(lambda: _prune(study, storage, spec), what="prune checkpoints")
                except Exception as e:  # the next trial that completes prunes them
                    if not is_transient(e):
                        raise
                    _log.warning("checkpoints not pruned: %s", describe(e))
            value = "" if outcome.value is None else f" val BPS {outcome.value:+.4f}"
            why = f" ({outcome.reason})" if outcome.reason else ""
            _log.info(
                "trial %d %s%s after %d epoch(s), %.1f s%s",
                outcome.number,
                outcome.state,
                value,
                outcome.epochs,
                outcome.seconds,
                why,
            )
            if outcome.infra:
                in_row += 1
                # A stalled trial leaves a hung thread behind (a CUDA call, a data loader):
                # this process is not to be trusted with another trial.
                if in_row >= max_infra_errors or stop.stalled is not None:
                    summary.stopped_by = "infrastructure"
                    summary.infra_reason, summary.infra_errors = outcome.reason, in_row
                    break
            elif outcome.state not in ("INFEASIBLE", "LOST"):  # it trained here: the node works
                in_row = 0
    except KeyboardInterrupt:
        summary.stopped_by = "signal"
        _log.warning("stopped; the running trial was re-enqueued to resume from its checkpoint")
    if summary.stopped_by == "budget" and progress(study.get_trials(), budget).done:
        removed = prune_checkpoints(study, spec)
        if removed:
            _log.info("study finished: removed the checkpoints of %d trials", len(removed))
    opened.close()
    return summary
