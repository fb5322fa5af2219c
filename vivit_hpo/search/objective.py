"""One trial, from sampled parameters to a told state.

The training loop knows nothing of Optuna: :class:`~vivit_hpo.training.Trainer` yields one
:class:`~vivit_hpo.training.EpochReport` per epoch, and :class:`TrialRunner` turns each into
``trial.report(best_val_score, epoch)`` and ``should_prune``: every report is the best
validation score so far (monotone; the spec's ``objective``: the mean validation BPS, or the
mean per-unit correlation with ``objective: corr``), the same quantity as the trial's final
value, so that the pruner and the sampler compare at each rung what the trial would be worth if
it stopped there. Each epoch's own value stays in the run folder (``epochs.jsonl``'
``val_bps``, ``metrics.json``). What ends a trial, and how it is told to the study (or handed
back to resume elsewhere), is :mod:`vivit_hpo.search.outcome`'s; the worker's stop signals are
:mod:`vivit_hpo.search.signals`'.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.config import DataConfig, RunConfig, parse_run_config
from vivit_hpo.data import SessionSet, load_sessions
from vivit_hpo.errors import ConfigError, VivitHpoError
from vivit_hpo.infra import check_data_here, infrastructure_error
from vivit_hpo.metrics import mean_over_sessions, objective_label
from vivit_hpo.models import count_parameters, flops_per_sample
from vivit_hpo.search.devices import memory_cap_bytes
from vivit_hpo.search.outcome import (
    HandBack,
    TrialOutcome,
    drop_checkpoints,
    frozen_trial,
    is_oom,
    record_attrs,
    retry_trial,
    set_feasible,
    tell,
    training_failure,
)
from vivit_hpo.search.record import (
    BASELINE,
    BEST_EPOCH,
    BINS_PER_S,
    DEVICE,
    EPOCHS_RUN,
    EXTRA_OVERRIDES,
    FAIL_REASON,
    FIXED_PARAMS,
    FLOPS_PER_SAMPLE,
    HEARTBEAT,
    HOST,
    INFEASIBLE_REASON,
    INTERRUPT,
    PARAMS_COUNT,
    PEAK_MEMORY_MB,
    PID,
    PRUNE_REASON,
    RESPONSE_KINDS,
    RESUMED_FROM_EPOCH,
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
    append_epoch,
    unreported_epochs,
)
from vivit_hpo.search.signals import STOP_SIGNALS, StopControl, TrialLost, TrialStalled
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
from vivit_hpo.search.storage import describe, is_transient, retrying
from vivit_hpo.search.study import ensure_data, trial_dir
from vivit_hpo.search.watchdog import Progress
from vivit_hpo.training import EpochReport, Trainer, resolve_device
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
        # Fails and re-enqueues a trial that is not its config's fault (an interrupt, the node).
        self._handback = HandBack(spec, storage, stop, self._trial_dir, self.host, self.device)
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

    def _record_epoch(self, run_dir: Path, number: int, report: EpochReport) -> None:
        """Who trained the epoch (``host:pid``), when, and its validation BPS, in the run folder:
        the trainer's ``before_commit``, so that no checkpoint holds an epoch without its record
        (:mod:`~vivit_hpo.search.record`); one that cannot be written stops the epoch unsaved."""
        end = time.time()
        start, worker = end - report.seconds, f"{self.host}:{os.getpid()}"
        append_epoch(run_dir, EpochRecord(number, report.epoch, worker, start, end, report.val_bps))

    def _stepped(self, batch: int, batches: int) -> None:
        self.progress.mark()

    def hand_back_stalled(self, study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
        """Re-enqueue a stalled trial whose main thread hangs where no signal reaches it (from
        the watchdog's thread, before the worker exits): the node's fault, under its cap."""
        self._handback.infra_outcome(
            study, trial, reason, {}, 0, time.perf_counter(), free_cuda=False
        )

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
        frozen = frozen_trial(self.storage, trial)
        try:
            return self._run(study, trial, frozen, start)
        except TrialStalled as e:
            # Hung (the watchdog woke this thread): the node's fault; the worker stops after.
            return self._handback.infra_outcome(study, trial, str(e), {}, 0, start, free_cuda=False)
        except TrialLost as e:
            # Before anyone may call it stale: hand it back once the database answers again
            # (stale checks wait a grace period after an outage, so this comes first).
            _log.warning("trial %d given up: %s", trial.number, e)
            self._handback.hand_back(
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
            self._handback.hand_back(study, trial, reason, "was interrupted", INTERRUPT, wait=False)
            raise
        except Exception as e:
            if is_transient(e):
                # The database stayed down past the give-up time: not the trial's fault.
                why = f"the database was unreachable ({describe(e)}); resumes from its checkpoint"
                _log.warning("trial %d stopped: %s", trial.number, why)
                self._handback.hand_back(study, trial, why, "lost the database", INTERRUPT)
                return TrialOutcome(trial.number, "LOST", None, why, 0, time.perf_counter() - start)
            # The node's fault outside training (the trial's folder cannot be made, say).
            infra = infrastructure_error(e)
            if infra is None:
                raise
            return self._handback.infra_outcome(study, trial, infra, {}, 0, start)

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
                tell(study, trial, TrialState.FAIL)
                return TrialOutcome(n, "FAIL", None, str(e), 0, time.perf_counter() - start)
            attrs[VALUES] = {}
        else:
            # Values enqueued without `study enqueue`'s checks (by Optuna directly, or an older
            # version) that the space cannot take would make Optuna raise mid-suggest.
            bad = enqueued_problem(self.spec.space, frozen.system_attrs.get(FIXED_PARAMS) or {})
            if bad is not None:
                why = f"enqueued with a value the space cannot take: {bad}"
                record_attrs(trial, {**attrs, FAIL_REASON: why})
                tell(study, trial, TrialState.FAIL)
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
                set_feasible(trial, False)
                tell(study, trial, TrialState.PRUNED)
                return TrialOutcome(n, "INFEASIBLE", None, reason, 0, time.perf_counter() - start)
            cfg = trial_config(self.base, to_overrides(self.spec.space, values), extra)
        attrs[RUN_CONFIG] = cfg.to_dict()

        # 2. Train, reporting every epoch (the worker runs the heartbeat alongside).
        run_dir = self._handback.take_over_dir(trial, frozen)
        attrs[TRIAL_DIR] = str(run_dir)
        end: dict[str, Any] = {}
        epochs = 0
        try:
            with self.stop.interruptible():
                data = self._sessions(cfg.data)
                trainer = Trainer(
                    cfg,
                    data,
                    device=self.device,
                    run_dir=run_dir,
                    on_step=self._stepped,
                    before_commit=functools.partial(self._record_epoch, run_dir, n),
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
                    set_feasible(trial, True)
                    tell(study, trial, TrialState.PRUNED)
                    drop_checkpoints(self._trial_dir(n))
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
                return self._handback.infra_outcome(
                    study, trial, infra, {**attrs, **end}, epochs, start
                )
            # Out of memory and a diverging loss end PRUNED (TPE learns to avoid the region),
            # any other error FAIL.
            why, learnable = training_failure(e, n)
            if is_oom(e) and self.device.type == "cuda":
                torch.cuda.empty_cache()
            record_attrs(trial, {**attrs, **end, FAIL_REASON: why})
            if learnable:
                set_feasible(trial, False)
            tell(study, trial, TrialState.PRUNED if learnable else TrialState.FAIL)
            drop_checkpoints(self._trial_dir(n))
            return TrialOutcome(n, "FAIL", None, why, epochs, time.perf_counter() - start)

        # 3. Done: the best epoch's score is the value.
        value = trainer.best_score
        if trainer.best_epoch is not None:
            end[BEST_EPOCH] = trainer.best_epoch
        end[STOPPED_EARLY] = trainer.stopped_early
        if not math.isfinite(value):
            why = f"no finite validation {self._label(data)} after {trainer.epoch} epochs"
            record_attrs(trial, {**end, FAIL_REASON: why})
            tell(study, trial, TrialState.FAIL)
            return TrialOutcome(n, "FAIL", None, why, epochs, time.perf_counter() - start)
        with self.stop.interruptible():
            end.update(self._test_scores(run_dir, data, cfg.train.batch_size))
        record_attrs(trial, end)
        set_feasible(trial, True)
        tell(study, trial, TrialState.COMPLETE, value)
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
        # Every batch is progress: a test split far larger than the validation subset (or a
        # loaded machine) may take longer than heartbeat.stall_s, and its retry would score it
        # again, stalled again, until no worker was left.
        self.progress.mark()
        try:
            scores = score_best(
                run_dir,
                data,
                ["test"],
                self.device,
                batch_size=batch_size,
                on_batch=self.progress.mark,
            )["test"]
        except Exception as e:  # the trial's value stands; the attribute says what went wrong
            _log.warning("trial in %s: test split not scored: %s", run_dir, e)
            return {TEST_BPS_ERROR: f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        # Sessions without a valid test spike are left out, as in validation.
        test = mean_over_sessions(scores)
        out: dict[str, Any] = {TEST_BPS: test.bps, TEST_BPS_PER_SESSION: test.per_session}
        if math.isfinite(test.corr):
            out[TEST_CORR] = test.corr
        return out
