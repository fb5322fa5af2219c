"""``vivit-hpo run``: create or load a study, start its workers on this machine and watch them.

The coordinator is a supervisor, not a scheduler: workers claim trials from the database on
their own (so workers started by hand or on other machines join the same study). It starts
``python -m vivit_hpo worker NAME --device D`` per GPU (or N CPU workers), restarts a worker that
dies, fails stale trials (a dead worker's trial is re-enqueued and resumes from its checkpoint),
stops at the budget or the spec's time limit, and on Ctrl-C, SIGTERM or SIGHUP asks every worker
to stop (SIGINT): each one fails its running trial and re-enqueues it, so that the next ``run``
or ``worker`` resumes it from the last epoch's checkpoint. It returns only once every worker has
exited. It draws nothing: how the run stands (:class:`RunSnapshot`) and the lines for the user
(:class:`RunMessage`) go to a ``progress`` callback, which the CLI's live table
(:class:`vivit_hpo._live.LiveView`) draws.

A database that is down is waited for: ``run`` keeps supervising the workers (which wait for it
too, see :mod:`~vivit_hpo.search.worker`) and reports the last counts with a "database
unreachable" note until it answers again.

A worker that stopped because of the node (exit :data:`~vivit_hpo.infra.INFRA_EXIT_CODE`: a GPU
error, data missing here, a full disk; see :mod:`vivit_hpo.infra`) is not restarted: another
start would meet the same fault at once. Its slot is given up with the reason (the worker's last
log line) in the snapshot's note, and when no worker is left before the study is done, ``run``
exits with that code and the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vivit_hpo import settings
from vivit_hpo.errors import StudyNotFoundError
from vivit_hpo.infra import DEFAULT_MAX_INFRA_ERRORS, INFRA_EXIT_CODE, reason_in_log
from vivit_hpo.search.signals import stop_on_signals
from vivit_hpo.search.spec import StudySpec, load_spec, study_n_trials
from vivit_hpo.search.storage import (
    StaleCheck,
    claim_lock,
    describe,
    is_transient,
    mask_url,
    open_storage,
    resolve_storage_url,
    retrying,
)
from vivit_hpo.search.study import (
    StudyError,
    StudyProgress,
    best_trial,
    create_study,
    logs_dir,
    prune_checkpoints,
    read_spec,
)
from vivit_hpo.search.study import progress as count_trials
from vivit_hpo.search.worker import open_study

__all__ = [
    "RunEvent",
    "RunMessage",
    "RunResult",
    "RunSnapshot",
    "WorkerStatus",
    "run_study",
    "worker_devices",
]

_log = logging.getLogger(__name__)

_STOP_WAIT_S = 120.0  # how long stopped workers get to re-enqueue their trials
_FAST_DEATH_S = 15.0  # a worker that dies sooner than this after starting counts towards giving up
_MAX_FAST_DEATHS = 3


@dataclass
class _Slot:
    index: int
    device: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    fast_deaths: int = 0
    given_up: bool = False
    last_code: int | None = None
    reason: str = ""  # why it was given up
    log: IO[bytes] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RunResult:
    # 0 budget done, 130 interrupted, 1 workers kept dying, 3 time limit, 75 (INFRA_EXIT_CODE)
    # every worker stopped by infrastructure errors
    exit_code: int
    progress: StudyProgress
    restarts: int


@dataclass(frozen=True)
class WorkerStatus:
    """One worker slot of a run, as it stands."""

    index: int
    device: str
    pid: int | None  # None: not started yet
    running: bool
    given_up: bool  # not restarted any more (see RunSnapshot.note for why)
    last_code: int | None  # its last exit code
    restarts: int

    @property
    def state(self) -> str:
        """One line: running, or how it exited."""
        if self.running:
            return "running"
        if self.given_up and self.last_code == INFRA_EXIT_CODE:
            return f"stopped: infrastructure error (exit {self.last_code})"
        if self.given_up:
            return f"gave up (exit {self.last_code})"
        return f"exited ({self.last_code})"


@dataclass(frozen=True)
class RunSnapshot:
    """How a run stands, reported every ``refresh_s`` while its workers run and once more
    (``final``) when every one has exited."""

    study: str
    progress: StudyProgress  # the study's counts (the last ones while the database is down)
    workers: tuple[WorkerStatus, ...]
    elapsed_s: float
    note: str = ""  # a worker given up, the database down, the time limit
    final: bool = False


@dataclass(frozen=True)
class RunMessage:
    """A line for the user: where the run goes, that the workers are being stopped, and the
    closing lines (the best trial, how to resume, why no worker is left)."""

    text: str
    one_line: bool = False  # keep it on one line (a long error to read or copy whole)


RunEvent = RunSnapshot | RunMessage


def worker_devices(
    workers: int | None, gpus: Sequence[int] | None, device: str | None
) -> list[str]:
    """One device string per worker: ``--gpus 0,1`` -> cuda:0, cuda:1; ``--workers N`` -> N x
    ``device`` (default cpu); neither -> every visible GPU, else one CPU worker."""
    if gpus:
        return [f"cuda:{g}" for g in gpus]
    if workers:
        return [device or "cpu"] * workers
    import torch

    if device is None and torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [device or "cpu"]


def _spec_diff(a: StudySpec, b: StudySpec) -> list[str]:
    # ``baseline`` acts once, at creation: continuing a study never depends on it.
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    return [k for k in da if da[k] != db.get(k) and k != "baseline"]


def _prepare(
    name: str, spec_path: Path | None, storage_url: str | None, *, baseline: bool = True
) -> StudySpec:
    """The spec of study ``name``, which is created from ``spec_path`` when it does not exist.

    The study module says whether it exists (:func:`~vivit_hpo.search.study.read_spec`, the
    check :func:`~vivit_hpo.search.study.load_study` makes) and creates it.

    Raises:
        StudyError: no such study and no ``spec_path``; one made from another spec; one that
            vivit-hpo did not make.
    """
    storage = open_storage(storage_url)
    try:
        try:
            stored = read_spec(storage, name)
        except StudyNotFoundError:
            if spec_path is None:
                raise StudyError(
                    f"study {name!r} does not exist; pass --spec FILE to create it"
                ) from None
        else:
            if spec_path is not None:
                diff = _spec_diff(stored, load_spec(spec_path))
                if diff:
                    raise StudyError(
                        f"study {name!r} exists with another spec (differs in: {', '.join(diff)}); "
                        f"omit --spec to continue it, or use a new study name"
                    )
            return stored
        spec = load_spec(spec_path)
        if not baseline:
            spec = spec.model_copy(update={"baseline": False})
        create_study(storage, name, spec)
        return spec
    finally:
        storage.engine.dispose()


def _run_snapshot(
    name: str,
    p: StudyProgress,
    slots: list[_Slot],
    elapsed_s: float,
    note: str,
    *,
    final: bool = False,
) -> RunSnapshot:
    workers = tuple(
        WorkerStatus(
            index=s.index,
            device=s.device,
            pid=None if s.proc is None else s.proc.pid,
            running=s.proc is not None and s.proc.poll() is None,
            given_up=s.given_up,
            last_code=s.last_code,
            restarts=s.restarts,
        )
        for s in slots
    )
    return RunSnapshot(name, p, workers, elapsed_s, note, final)


def _start(
    slot: _Slot,
    name: str,
    env: dict[str, str],
    max_infra_errors: int,
    finish_by: float | None = None,
) -> None:
    slot.log_path.parent.mkdir(parents=True, exist_ok=True)
    if slot.log is not None:
        slot.log.close()
    slot.log = open(slot.log_path, "ab")  # noqa: SIM115 - lives as long as the worker
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    slot.log.write(f"--- {stamp} starting worker on {slot.device}\n".encode())
    slot.log.flush()
    slot.proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "vivit_hpo", "worker", name, "--device", slot.device),
            *("--max-infra-errors", str(max_infra_errors)),
            *(() if finish_by is None else ("--finish-by", repr(finish_by))),
        ],
        stdout=slot.log,
        stderr=subprocess.STDOUT,
        env=env,
        # Its own session: a Ctrl-C in the terminal reaches the coordinator only, which then
        # stops every worker in order.
        start_new_session=True,
    )
    slot.started = time.monotonic()


def _stop_all(slots: list[_Slot]) -> None:
    alive = [s for s in slots if s.proc is not None and s.proc.poll() is None]
    for s in alive:
        assert s.proc is not None
        s.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + _STOP_WAIT_S
    for s in alive:
        assert s.proc is not None
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
        s.last_code = s.proc.returncode


def run_study(
    name: str,
    spec_path: Path | None,
    storage_url: str | None,
    *,
    devices: Sequence[str],
    progress: Callable[[RunEvent], None] | None = None,
    refresh_s: float = 2.0,
    baseline: bool = True,
    max_infra_errors: int = DEFAULT_MAX_INFRA_ERRORS,
    finish_by: float | None = None,
) -> RunResult:
    """Create or load study ``name``, run one worker per entry of ``devices``, and watch them.

    Args:
        name: the study.
        spec_path: the spec (needed to create the study; when the study exists it must match).
        storage_url: the storage (None: ``$VIVIT_HPO_STORAGE`` or the embedded default).
        devices: the device of each worker (see :func:`worker_devices`).
        progress: called with a :class:`RunSnapshot` every ``refresh_s`` and with the lines
            for the user (:class:`RunMessage`: the best trial, how to resume...); None: the run
            is silent. :class:`vivit_hpo._live.LiveView` draws them as ``vivit-hpo run`` does.
        refresh_s: seconds between snapshots and worker checks.
        baseline: creating the study, enqueue its base config first (unless the spec says no).
        max_infra_errors: each worker's ``--max-infra-errors``.
        finish_by: each worker's ``--finish-by`` (``time.time()``): running trials end with
            their best epoch when their next epoch would end after it. ``budget.timeout_minutes``
            alone stops the workers at the limit, and their running trials are failed and
            re-enqueued to resume later: a result later, none now.

    Returns:
        The exit code and the final counts.
    """

    def report(event: RunEvent) -> None:
        if progress is not None:
            progress(event)

    _prepare(name, spec_path, storage_url, baseline=baseline)
    url = resolve_storage_url(storage_url)
    opened = open_study(name, storage_url)
    storage, study, spec = opened.storage, opened.study, opened.spec
    budget = study_n_trials(spec)
    logs = logs_dir(spec, name, opened.uid)
    env = dict(os.environ)
    env[settings.STORAGE.name] = url  # in the environment, not on a command line that ps shows
    # The workers import this very package, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    n_cpu = sum(1 for d in devices if d == "cpu")
    if n_cpu and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_cpu))
    slots = [_Slot(i, d, logs / f"worker-{i}.log") for i, d in enumerate(devices)]
    report(
        RunMessage(
            f"study {name!r} on {mask_url(url)}: {len(slots)} worker(s) on "
            f"{', '.join(devices)}; logs in {logs}"
        )
    )
    start = time.monotonic()
    timeout = spec.budget.timeout_minutes
    deadline = start + timeout * 60 if timeout else None
    exit_code = 0
    note = ""
    stale = StaleCheck(storage)
    stale_every = float(spec.heartbeat.interval_s)
    last_stale = 0.0

    def read() -> StudyProgress:
        return count_trials(study.get_trials(deepcopy=False), budget)

    p = retrying(read, what="read the study")
    down_since: float | None = None  # the database has not answered since then

    def snapshot() -> StudyProgress:
        """The counts now, or the last ones while the database is down: the workers wait for
        it, and so does ``run``, supervising them all the while."""
        nonlocal down_since
        try:
            fresh = retrying(read, what="read the study", max_wait_s=refresh_s)
        except Exception as e:
            if not is_transient(e):
                raise
            if down_since is None:
                down_since = time.monotonic()
                _log.warning(
                    "database unreachable (%s); retrying, workers keep running", describe(e)
                )
            return p
        if down_since is not None:
            _log.warning("database reachable again after %.0f s", time.monotonic() - down_since)
            down_since = None
        return fresh

    # Signals stay handled until every worker has exited, the stopping included.
    with stop_on_signals() as stop:
        try:
            report(_run_snapshot(name, p, slots, 0.0, note))
            for s in slots:
                _start(s, name, env, max_infra_errors, finish_by)
            while not stop.is_set():
                now = time.monotonic()
                if now - last_stale >= stale_every:

                    def fail_stale() -> None:
                        with claim_lock(storage, name):
                            stale(study)

                    try:
                        retrying(fail_stale, what="fail stale trials", max_wait_s=refresh_s)
                    except Exception as e:  # the workers check too; try again next time
                        _log.warning("stale check failed: %s", describe(e))
                    last_stale = now
                p = snapshot()
                for s in slots:
                    if s.proc is None or s.given_up or s.proc.poll() is None:
                        continue
                    code = s.last_code = s.proc.returncode
                    if p.done or code == 0:
                        continue
                    if code == INFRA_EXIT_CODE:
                        # The node is at fault: a restart would fail the same way at once.
                        s.given_up = True
                        s.reason = reason_in_log(s.log_path) or (
                            f"infrastructure error; see {s.log_path}"
                        )
                        note = f"worker {s.index} not restarted: {s.reason}"
                        continue
                    # Died (crash, OOM kill, SIGKILL): start another; its trial is retried.
                    if now - s.started < _FAST_DEATH_S:
                        s.fast_deaths += 1
                    if s.fast_deaths >= _MAX_FAST_DEATHS:
                        s.given_up = True
                        note = f"worker {s.index} keeps dying; see {s.log_path}"
                        continue
                    s.restarts += 1
                    _start(s, name, env, max_infra_errors, finish_by)
                alive = [s for s in slots if s.proc is not None and s.proc.poll() is None]
                shown = note
                if down_since is not None:
                    shown = (
                        f"database unreachable for {now - down_since:.0f} s, retrying "
                        f"(counts as of then; the workers wait for it){'; ' if note else ''}"
                        f"{note}"
                    )
                report(_run_snapshot(name, p, slots, now - start, shown))
                if not alive:
                    if not p.done and any(s.given_up for s in slots):
                        infra = [s for s in slots if s.last_code == INFRA_EXIT_CODE]
                        exit_code = INFRA_EXIT_CODE if infra else 1
                    break
                if deadline is not None and now > deadline:
                    note = "time limit reached: stopping the workers"
                    report(_run_snapshot(name, p, slots, now - start, note))
                    _stop_all(slots)
                    exit_code = 3
                    break
                stop.wait(refresh_s)
            else:  # a stop signal (the loop ended without a break)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            report(RunMessage("stopping the workers (their running trials will resume later) ..."))
            _stop_all(slots)
            exit_code = 130
        except BaseException:
            # Workers run in sessions of their own: never leave them running without us.
            _stop_all(slots)
            raise
        finally:
            for s in slots:
                if s.log is not None:
                    s.log.close()
    p = snapshot()
    if exit_code == INFRA_EXIT_CODE:
        note = ""  # the error line below says it
    report(_run_snapshot(name, p, slots, time.monotonic() - start, note, final=True))
    if p.done:
        removed = prune_checkpoints(study, spec)
        if removed:
            report(RunMessage(f"removed the checkpoints of {len(removed)} trials (kept the best)"))
        try:
            best = best_trial(study)
            report(
                RunMessage(
                    f"best: trial #{best.number}, val BPS {best.value:+.4f}; "
                    f"`vivit-hpo study export-best {name} --out best.yaml` writes its config"
                )
            )
        except StudyError as e:
            report(RunMessage(str(e)))
    elif exit_code == 130:
        report(
            RunMessage(f"stopped; resume with `vivit-hpo run {name}` or `vivit-hpo worker {name}`")
        )
    elif exit_code == INFRA_EXIT_CODE:
        reasons = "; ".join(
            f"worker {s.index} not restarted: {s.reason}" for s in slots if s.reason
        )
        report(
            RunMessage(
                f"error: no worker left before study {name!r} is done; {reasons}; once that is "
                f"fixed, `vivit-hpo run {name}` resumes its trials",
                one_line=True,
            )
        )
    opened.close()
    restarts = sum(s.restarts for s in slots)
    return RunResult(exit_code=exit_code, progress=p, restarts=restarts)
