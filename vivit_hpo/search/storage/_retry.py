"""Riding out a database outage: which errors a retry can cure, and the retrying call.

Every storage call a worker makes goes through :func:`retrying`, which rides out a database
restart (exponential back-off on disconnects and ``database is locked``); :data:`CONNECTIVITY`
records when this process last lost the database, for the stale check, and
:data:`STORAGE_WAITS` which threads are waiting for it now, for the progress watchdog.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
import sqlalchemy
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError as SAOperationalError

from vivit_hpo import settings

__all__ = [
    "CONNECTIVITY",
    "DEFAULT_MAX_WAIT_S",
    "ENV_MAX_WAIT",
    "STORAGE_WAITS",
    "Connectivity",
    "StorageWaits",
    "describe",
    "give_up_s",
    "is_transient",
    "retrying",
    "wait_for_database",
]

_log = logging.getLogger(__name__)

ENV_MAX_WAIT = settings.STORAGE_MAX_WAIT_S.name
DEFAULT_MAX_WAIT_S = settings.STORAGE_MAX_WAIT_S.default()  # how long one call is retried

T = TypeVar("T")


class _Retryable(Exception):
    """An error of this package's own that a retry can cure (:func:`is_transient` says so)."""


# SQLSTATEs a retry can cure: connection exceptions (class 08), too many connections, a server
# shutting down, crashing or starting up, serialization failures and deadlocks, a lock not
# obtained within lock_timeout (the claim lock's waiters) and a session the server ended for
# idling in a transaction (a claim lock held past its idle timeout).
_TRANSIENT_SQLSTATES = (
    "08",
    "53300",
    "57P01",
    "57P02",
    "57P03",
    "40001",
    "40P01",
    "55P03",
    "25P03",
)
# libpq's connection errors carry no SQLSTATE; these say the URL is wrong, not the server down.
_PERMANENT_CONNECT = (
    "does not exist",  # database, role
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "could not translate host name",  # unknown host
    "permission denied",
    "invalid dsn",
)


def _driver_verdict(err: BaseException) -> bool | None:
    """Whether a driver's own error is transient; None when ``err`` is not one."""
    if isinstance(err, sqlite3.OperationalError):
        text = str(err)
        return "locked" in text or "busy" in text
    if not type(err).__module__.startswith("psycopg2"):
        return None
    code = getattr(err, "pgcode", None)
    if code:
        return str(code).startswith(_TRANSIENT_SQLSTATES)
    if type(err).__name__ in ("OperationalError", "InterfaceError"):
        text = str(err).lower()
        return not any(p in text for p in _PERMANENT_CONNECT)
    return False


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry can cure: a lost connection, a restarting server, a lock.

    A wrong database name, user or password, or an unknown host is not transient: retrying
    cannot cure it, so it fails at once.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DBAPIError):
            if cur.connection_invalidated:
                return True
            verdict = _driver_verdict(cur.orig) if cur.orig is not None else None
            if verdict is not None:
                return verdict
            if isinstance(cur, SAOperationalError | sqlalchemy.exc.InterfaceError):
                return True  # another driver's: as before, assume the connection
        verdict = _driver_verdict(cur)
        if verdict is not None:
            return verdict
        if isinstance(cur, sqlalchemy.exc.TimeoutError | _Retryable):
            return True  # the pool was exhausted for a while, or the claim lock busy
        cur = cur.__cause__ or cur.__context__
    return False


def describe(exc: BaseException) -> str:
    """One line naming the root cause (Optuna wraps driver errors in StorageInternalError)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(getattr(root, "orig", None) or root).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(root).__name__}: {first}" if first else type(root).__name__


def give_up_s() -> float:
    """How long :func:`retrying` retries a call before it gives up (seconds):
    ``$VIVIT_HPO_STORAGE_MAX_WAIT_S``, else :data:`DEFAULT_MAX_WAIT_S`
    (:data:`vivit_hpo.settings.STORAGE_MAX_WAIT_S`).

    Raises:
        StorageError: the variable is set to something other than a number of seconds >= 0.
    """
    return settings.STORAGE_MAX_WAIT_S.get()


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    max_wait_s: float | None = None,
    first_delay_s: float = 0.5,
) -> T:
    """Call ``fn`` and retry it with exponential back-off while it fails transiently; the
    calling thread counts as waiting for the database (:data:`STORAGE_WAITS`) meanwhile.

    Args:
        fn: the storage call (make it idempotent, or tolerant of having succeeded before).
        what: a few words for the log ("report epoch 3 of trial 7").
        max_wait_s: give up (re-raise) once this much time has passed in retries; None:
            :func:`give_up_s` (300 s unless ``$VIVIT_HPO_STORAGE_MAX_WAIT_S`` says otherwise).
            A caller that must not give up waits on with :func:`wait_for_database`.
        first_delay_s: the first wait; it doubles up to 30 s.

    Returns:
        What ``fn`` returns.

    Raises:
        StorageError: ``$VIVIT_HPO_STORAGE_MAX_WAIT_S`` is not a number of seconds.
    """
    limit = give_up_s() if max_wait_s is None else max_wait_s
    start = time.monotonic()
    delay = first_delay_s
    attempt = 0
    # The whole call, its first attempt too: a call in flight when the server went away takes
    # up to the connect timeout or the keepalives' to fail.
    with STORAGE_WAITS.waiting():
        while True:
            try:
                return fn()
            except Exception as e:
                attempt += 1
                waited = time.monotonic() - start
                if not is_transient(e) or waited + delay > limit:
                    raise
                CONNECTIVITY.mark_down()
                _log.warning(
                    "storage: %s failed (%s); retry %d in %.1f s", what, describe(e), attempt, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


_PROBE_MAX_DELAY_S = 10.0  # a database that is back is noticed this soon at the latest
_PROBE_LOG_EVERY_S = 60.0


def wait_for_database(
    storage: optuna.storages.RDBStorage, *, what: str, stop: Callable[[], bool]
) -> bool:
    """Wait, however long it takes, until the database answers (``SELECT 1``).

    For what must not be given up when the database stays down past :func:`retrying`'s
    give-up time: a trial handed back to resume, the next claim. An outage is the
    infrastructure's fault, never a trial's: the worker waits for the database instead of
    failing its trial or exiting. One warning line when the wait starts and one a minute.
    The calling thread counts as waiting for the database (:data:`STORAGE_WAITS`) meanwhile.

    Args:
        storage: the study's storage.
        what: a few words for the log ("hand trial 3 back").
        stop: checked every half second; True ends the wait (the worker was asked to stop).

    Returns:
        True once the database answers, False when ``stop`` turned true first.

    Raises:
        Exception: an error that is not transient (a dropped database, say), as is.
    """
    with STORAGE_WAITS.waiting():
        return _wait_for_database(storage, what, stop)


def _wait_for_database(
    storage: optuna.storages.RDBStorage, what: str, stop: Callable[[], bool]
) -> bool:
    start = time.monotonic()
    delay = 0.5
    next_log = start
    while not stop():
        try:
            with storage.engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except Exception as e:
            if not is_transient(e):
                raise
            CONNECTIVITY.mark_down()
            now = time.monotonic()
            if now >= next_log:
                _log.warning(
                    "storage: database unreachable for %.0f s (%s); waiting for it to %s",
                    now - start,
                    describe(e),
                    what,
                )
                next_log = now + _PROBE_LOG_EVERY_S
            until = time.monotonic() + delay
            while not stop() and time.monotonic() < until:
                time.sleep(min(0.5, max(0.0, until - time.monotonic())))
            delay = min(delay * 2, _PROBE_MAX_DELAY_S)
            continue
        if time.monotonic() - start > 1.0:
            _log.warning(
                "storage: database reachable again after %.0f s; going on to %s",
                time.monotonic() - start,
                what,
            )
        return True
    return False


class Connectivity:
    """When this process last failed to reach the database (a transient storage error).

    A stale check is only sound when this process has been able to reach the database for a
    whole grace period: after an outage every heartbeat is old, and the workers that wrote them
    need that long to write the next one. :func:`retrying` and :class:`Heartbeat` mark every
    transient failure here; a process counts as disconnected from its start.
    """

    def __init__(self) -> None:
        self._down_at = time.monotonic()
        self._lock = threading.Lock()

    def mark_down(self) -> None:
        with self._lock:
            self._down_at = time.monotonic()

    def connected_for(self) -> float:
        """Seconds since the process started or last failed to reach the database."""
        with self._lock:
            return time.monotonic() - self._down_at


CONNECTIVITY = Connectivity()


class StorageWaits:
    """Which threads of this process wait for the database now, and when each last did.

    Waiting for the database (a :func:`retrying` call, its back-off through an outage
    included; :func:`wait_for_database`) is no hang of the thread that waits: the progress
    watchdog (:class:`~vivit_hpo.search.watchdog.StallWatchdog`) counts the time its trial's
    thread spends in a wait as progress, so that an outage longer than ``heartbeat.stall_s``
    never passes for a stalled trial.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}  # thread ident -> waits in progress (they nest)
        self._ended: dict[int, float] = {}  # thread ident -> when its last wait ended

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """The calling thread waits for the database while the block runs."""
        me = threading.get_ident()
        with self._lock:
            self._open[me] = self._open.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[me] -= 1
                if not self._open[me]:
                    del self._open[me]
                self._ended[me] = time.monotonic()

    def since(self, thread: int) -> float:
        """Seconds since thread ``thread`` (an ident) last waited for the database: 0 while it
        waits, infinity when it never did."""
        with self._lock:
            if thread in self._open:
                return 0.0
            ended = self._ended.get(thread)
        return math.inf if ended is None else time.monotonic() - ended


STORAGE_WAITS = StorageWaits()
