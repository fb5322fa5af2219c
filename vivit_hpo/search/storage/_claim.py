"""Coordination between workers: the claim lock, and the check that fails stale trials."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
from optuna.trial import TrialState

from vivit_hpo.search.record import retried_numbers
from vivit_hpo.search.storage._retry import CONNECTIVITY, _Retryable, describe, is_transient

__all__ = ["ClaimLockBusy", "ClaimTimeouts", "StaleCheck", "claim_lock"]

_log = logging.getLogger(__name__)


class StaleCheck:
    """Fail the trials whose worker is gone, and hand them to the storage's retry callback.

    A RUNNING trial is stale when its last heartbeat is older than the grace period (by the
    database's clock), or when it has none and has been seen without one, by this process,
    for a grace period (its worker died between claiming it and its first beat, or the claim's
    commit reply was lost and the claim was made again). Optuna's own check ignores trials
    without a heartbeat, which then run forever and keep the study from finishing.

    Nothing counts as stale until this process (:data:`CONNECTIVITY`) and the PostgreSQL
    server (its uptime) have both been up for a grace period: after an outage, live workers get
    that long to write their next heartbeat. Run it under the claim lock, as the claim does.
    """

    def __init__(self, storage: optuna.storages.RDBStorage) -> None:
        self.storage = storage
        grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)
        self.grace_s = float(grace)
        self._unbeaten: dict[int, float] = {}  # trial id -> when first seen without a beat

    def _running(self, study_id: int) -> tuple[list[tuple[int, Any]], Any, float | None]:
        """(trial id, last heartbeat) of the RUNNING trials, the database's now, and the
        server's uptime in seconds (None: not PostgreSQL)."""
        trials, beats = TrialModel.__table__, TrialHeartbeatModel.__table__
        query = (
            sqlalchemy.select(trials.c.trial_id, beats.c.heartbeat)
            .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
            .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
        )
        with self.storage.engine.connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
            rows = [(int(r[0]), r[1]) for r in conn.execute(query)]
            uptime = None
            if conn.dialect.name == "postgresql":
                up = conn.execute(
                    sqlalchemy.text("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
                ).scalar()
                uptime = float(up or 0.0)
        return rows, now, uptime

    def stale_ids(self, study: optuna.Study) -> list[int]:
        """The ids of the study's stale trials (see the class); none while not yet sound."""
        rows, now, uptime = self._running(study._study_id)
        clock, connected = time.monotonic(), CONNECTIVITY.connected_for()
        # A window of observation starts again whenever this process lost the database.
        unbeaten = {tid for tid, beat in rows if beat is None}
        self._unbeaten = {
            tid: max(self._unbeaten.get(tid, clock), clock - connected) for tid in unbeaten
        }
        if connected < self.grace_s or (uptime is not None and uptime < self.grace_s):
            return []
        now = now.replace(tzinfo=None)
        stale = [
            tid
            for tid, beat in rows
            if beat is not None and (now - beat.replace(tzinfo=None)).total_seconds() > self.grace_s
        ]
        stale += [tid for tid, seen in self._unbeaten.items() if clock - seen > self.grace_s]
        return sorted(stale)

    def __call__(self, study: optuna.Study) -> list[int]:
        """Retry each stale trial, then fail it (the storage's stale-trial callback retries).

        In that order, so that a process killed between the two steps loses nothing: the retry
        is in the database first, its ``retry_history`` naming the stale trial, and the next
        pass, which finds that trial still RUNNING and stale, sees its retry
        (:func:`~vivit_hpo.search.record.retried_numbers`) and only fails it. Run it under the
        claim lock, so that no other process retries the same trial meanwhile.

        Returns:
            The ids of the trials this call failed.
        """
        stale = self.stale_ids(study)
        if not stale:
            return []
        callback = self.storage.get_heartbeat_stale_trial_callback()
        retried = retried_numbers(study.get_trials(deepcopy=False))
        failed = []
        for tid in stale:
            self._unbeaten.pop(tid, None)
            frozen = study._storage.get_trial(tid)
            if frozen.state != TrialState.RUNNING:
                continue  # another process failed it first, or it just finished
            if callback is not None and frozen.number not in retried:
                callback(study, copy.deepcopy(frozen))
            try:
                if study._storage.set_trial_state_values(tid, state=TrialState.FAIL):
                    failed.append(tid)
                    _log.warning("trial %d is stale (its worker is gone); failed it", frozen.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished meanwhile (its retry, if one was just made, runs it again)
        return failed


def _lock_key(study_name: str) -> int:
    digest = hashlib.blake2b(f"vivit-hpo:{study_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# A claim is a few queries, but under load (50 workers, a busy server) it may take seconds: an
# idle timeout shorter than the longest claim would end the lock's session under a live claim.
_MIN_CLAIM_IDLE_S = 30.0
_DEFAULT_GRACE_S = 90.0  # the spec's default heartbeat grace, for storages opened without one


class ClaimLockBusy(_Retryable):
    """The claim lock stayed held by another worker for ``ClaimTimeouts.wait_s`` (transient:
    :func:`retrying` claims again)."""


@dataclass(frozen=True)
class ClaimTimeouts:
    """How long the PostgreSQL claim lock waits, and how long a silent holder keeps it.

    Set with ``SET LOCAL`` (``set_config(name, value, true)``) in the lock's own transaction, so
    they bind that transaction only and work through PgBouncer in transaction mode, where a
    session setting would stay on a server connection that other clients then get.

    Attributes:
        idle_s: ``idle_in_transaction_session_timeout``: the server ends the session of a
            holder that sent nothing for this long inside the lock's transaction (a hung or
            SIGSTOPped worker), which releases the lock. The lock's connection is idle while
            the worker's other connection runs the claim's queries, so this must exceed the
            longest claim; a claim that outlives it fails on commit (transiently: it is retried,
            and a trial it created meanwhile is found stale after the grace period).
        wait_s: how long a waiter keeps trying the lock (``pg_try_advisory_xact_lock`` with
            back-off, holding no connection between tries) before it gives up with
            :class:`ClaimLockBusy` (transient, so :func:`retrying` claims again), instead of
            waiting forever behind a holder that is stuck in a query rather than idle; also the
            ``lock_timeout`` of anything else the lock's transaction waits for.
        keepalive_idle_s, keepalive_interval_s, keepalive_count: the server's TCP keepalives
            (``tcp_keepalives_*``) on the lock's connection: a holder whose node vanished
            (power, network) is found dead after about ``idle + interval * count`` seconds,
            sooner than ``idle_s``.
    """

    idle_s: float
    wait_s: float
    keepalive_idle_s: int = 10
    keepalive_interval_s: int = 5
    keepalive_count: int = 3

    def __post_init__(self) -> None:
        # PostgreSQL reads the timeouts in whole ms, and 0 would switch them off.
        for name in ("idle_s", "wait_s"):
            if not getattr(self, name) >= 0.001:
                raise ValueError(f"ClaimTimeouts.{name}={getattr(self, name)!r}: must be >= 0.001")
        for name in ("keepalive_idle_s", "keepalive_interval_s"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"ClaimTimeouts.{name}={getattr(self, name)!r}: must be >= 1")
        if self.keepalive_count < 1:
            raise ValueError(f"ClaimTimeouts.keepalive_count={self.keepalive_count}: must be >= 1")

    @classmethod
    def for_storage(cls, storage: optuna.storages.RDBStorage) -> ClaimTimeouts:
        """The defaults: a silent holder keeps the lock for the heartbeat grace period.

        After the grace period a hung worker's trial is failed as stale anyway, so holding the
        lock no longer than that loses nothing (at least 30 s, so that a slow claim is not cut
        short). A waiter waits twice as long, so that behind one hung holder it gets the lock
        when the server ends the holder's session, rather than an error.
        """
        interval = storage.heartbeat_interval
        grace = storage.grace_period or (2 * interval if interval else None) or _DEFAULT_GRACE_S
        idle = max(float(grace), _MIN_CLAIM_IDLE_S)
        return cls(idle_s=idle, wait_s=2 * idle)

    def settings(self) -> dict[str, str]:
        """The ``SET LOCAL`` settings, as PostgreSQL reads them (ms for the timeouts)."""
        return {
            "idle_in_transaction_session_timeout": str(round(self.idle_s * 1000)),
            "lock_timeout": str(round(self.wait_s * 1000)),
            "tcp_keepalives_idle": str(self.keepalive_idle_s),
            "tcp_keepalives_interval": str(self.keepalive_interval_s),
            "tcp_keepalives_count": str(self.keepalive_count),
        }


@contextlib.contextmanager
def claim_lock(
    storage: optuna.storages.RDBStorage,
    study_name: str,
    *,
    timeouts: ClaimTimeouts | None = None,
) -> Iterator[None]:
    """Serialise "count the study's trials, then claim or create one" across all workers.

    PostgreSQL: a transaction-scoped advisory lock (released on commit, or when a killed
    worker's connection drops), in a transaction bounded by ``timeouts`` (default
    :meth:`ClaimTimeouts.for_storage`): a dead, hung or vanished holder loses the lock, and a
    waiter gives up with a transient error instead of waiting forever. SQLite: an ``flock`` on
    a file beside the database (one machine; ``timeouts`` do not apply). Held for a few queries
    only; the sampler runs outside it.

    Waiters try the lock with back-off and hold no connection in between, so a queue of
    workers at a claim storm (all of them starting at once) costs the server nothing.

    Raises:
        ClaimLockBusy: the lock was not obtained within ``wait_s``.
        sqlalchemy.exc.OperationalError: the server ended the lock's session (the holder was
            idle past ``idle_s``). Both are :func:`is_transient`.
    """
    engine = storage.engine
    limits = timeouts or ClaimTimeouts.for_storage(storage)
    if engine.dialect.name == "postgresql":
        yield from _pg_claim_lock(engine, study_name, limits)
        return
    path = Path(str(engine.url.database)).with_suffix(".claim.lock")
    with open(path, "a+") as f:
        # Tried with back-off too: a worker stopped (Ctrl-Z, a debugger) while it holds the lock
        # must not block every other worker, and `run`, for ever.
        for delay in _backoff(limits.wait_s, study_name):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(delay)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _backoff(wait_s: float, study_name: str) -> Iterator[float]:
    """Jittered delays between tries of the claim lock, doubling up to 0.5 s; raises
    :class:`ClaimLockBusy` once ``wait_s`` would be exceeded."""
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        jittered = delay * random.uniform(0.5, 1.5)
        if time.monotonic() + jittered > deadline:
            raise ClaimLockBusy(
                f"the claim lock of study {study_name!r} stayed held for {wait_s:.0f} s"
            )
        yield jittered
        delay = min(2 * delay, 0.5)


def _pg_claim_lock(
    engine: sqlalchemy.engine.Engine, study_name: str, limits: ClaimTimeouts
) -> Iterator[None]:
    # set_config(name, value, true) is SET LOCAL with bind parameters, all in one statement.
    params: dict[str, str] = {}
    for i, (name, value) in enumerate(limits.settings().items()):
        params |= {f"n{i}": name, f"v{i}": value}
    calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(params) // 2))
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)")
    key = {"k": _lock_key(study_name)}
    for delay in _backoff(limits.wait_s, study_name):
        conn = engine.connect()
        try:
            tx = conn.begin()
            conn.execute(sqlalchemy.text(f"SELECT {calls}"), params)
            if not conn.execute(try_lock, key).scalar():
                # Held by another worker: wait without a connection (it goes back to the pool),
                # so that workers queueing for the lock hold no server connections.
                tx.rollback()
                conn.close()
                time.sleep(delay)
                continue
            try:
                yield
            except BaseException:
                tx.rollback()
                raise
            try:
                tx.commit()
            except Exception as e:
                # The claim's own writes committed on other connections; only the lock's empty
                # transaction failed, and the lock went with its session. Raising would make
                # the caller claim a second trial.
                if not is_transient(e):
                    raise
                _log.warning("claim lock: the release failed (%s); it is gone anyway", describe(e))
            return
        finally:
            conn.close()  # a no-op when already closed
