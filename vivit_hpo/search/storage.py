"""Where studies live: PostgreSQL for real use, an embedded SQLite file by default.

The URL comes from ``--storage``, else ``VIVIT_HPO_STORAGE``, else the embedded default
``storage/vivit-hpo.db`` (under ``$VIVIT_HPO_HOME`` when set, else the current directory).

Why SQLite for the embedded default, through Optuna's ``RDBStorage``: it is one file that
several local worker processes share at once (WAL journal: readers never block the one writer;
a generous busy timeout makes writers queue instead of failing), it keeps Optuna's heartbeat
(the journal storages have none in Optuna 5, so a dead worker's trial would never be failed and
retried), and ``optuna-dashboard sqlite:///storage/vivit-hpo.db`` reads it as it is. It is meant
for one machine: SQLite over a network file system is not safe, so multi-machine studies use
PostgreSQL.

Every storage call a worker makes goes through :func:`retrying`, which rides out a database
restart (exponential back-off on disconnects and ``database is locked``), and the pool
pre-pings connections so that a connection killed by a restart is replaced, not used.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import os
import random
import re
import socket
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
from optuna.trial import TrialState
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.exc import OperationalError as SAOperationalError

from vivit_hpo import settings
from vivit_hpo.errors import StorageError
from vivit_hpo.search.record import RetryStaleTrial, retried_numbers

__all__ = [
    "CONNECTIVITY",
    "ClaimLockBusy",
    "ClaimTimeouts",
    "Connectivity",
    "Heartbeat",
    "StaleCheck",
    "application_name",
    "claim_lock",
    "default_storage_url",
    "describe",
    "give_up_s",
    "is_transient",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "retrying",
    "sqlite_path",
    "vivit_home",
    "wait_for_database",
]

_log = logging.getLogger(__name__)

ENV_STORAGE = settings.STORAGE.name
ENV_HOME = settings.HOME.name
DEFAULT_DB = settings.EMBEDDED_DB
CONNECT_WAIT_S = 60.0  # how long a worker waits, at its start, for a server that is down
ENV_MAX_WAIT = settings.STORAGE_MAX_WAIT_S.name
DEFAULT_MAX_WAIT_S = settings.STORAGE_MAX_WAIT_S.default()  # how long one call is retried
_FIX = "pass --storage postgresql://user:password@host:5432/db or sqlite:///path/to/file.db"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

T = TypeVar("T")


def vivit_home() -> Path:
    """The folder that holds ``storage/`` (and default ``artifacts/``): $VIVIT_HPO_HOME or cwd
    (:data:`vivit_hpo.settings.HOME`)."""
    return settings.HOME.get()


def default_storage_url() -> str:
    """The embedded default: ``sqlite:///<home>/storage/vivit-hpo.db`` (absolute path)."""
    return settings.STORAGE.default()


def resolve_storage_url(url: str | None) -> str:
    """``url``, else ``$VIVIT_HPO_STORAGE``, else :func:`default_storage_url`
    (:data:`vivit_hpo.settings.STORAGE`)."""
    return url or settings.STORAGE.get()


def sqlite_path(url: str | None) -> Path | None:
    """The database file of a SQLite storage URL (``url`` as :func:`resolve_storage_url` takes
    it), or None for any other URL, so that a command never writes its output over it."""
    try:
        parsed = make_url(resolve_storage_url(url))
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database).expanduser()


# Query keys whose values are secrets: libpq takes ``?password=`` and ``?sslpassword=``, and
# other drivers ``passwd``, ``pwd``, ``*_secret`` or ``*_token``; not ``passfile`` (a path).
_SECRET_KEY = re.compile(r"(pass|password|passwd|pwd|secret|token)$", re.IGNORECASE)
_MASK = "***"


def mask_url(url: str | URL) -> str:
    """The URL with its password, and every secret of its query string (``?password=``,
    ``?sslpassword=``...), replaced by ``***`` (never print a URL any other way)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        # Unparseable: show the scheme at most, as the rest may hold a password.
        text = str(url)
        return text.split("://", 1)[0] + "://..." if "://" in text else "<not a URL>"
    secret = {k: v for k, v in parsed.query.items() if _SECRET_KEY.search(k)}
    if secret:
        masked = {k: _MASK if isinstance(v, str) else (_MASK,) * len(v) for k, v in secret.items()}
        parsed = parsed.update_query_dict(masked)
    # The query is URL-encoded when rendered ("*" as %2A): show the mask as the password's.
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", _MASK)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise StorageError(f"storage {mask_url(url)}: not a database URL; {_FIX}") from e
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if "+" not in parsed.drivername:
            # SQLAlchemy 2.1 defaults to psycopg 3; the project ships psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        if not parsed.database:
            raise StorageError(f"storage {mask_url(parsed)}: no database name in the URL; {_FIX}")
        return parsed
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(
                f"storage {mask_url(parsed)}: an in-memory SQLite database cannot be shared "
                f"by workers; {_FIX}"
            )
        return parsed
    raise StorageError(f"storage {mask_url(parsed)}: unsupported database {backend!r}; {_FIX}")


def application_name(pid: int | None = None) -> str:
    """``vivit-hpo:<host>:<pid>``: which process on which node holds a connection.

    Every connection of this package carries it (this process's pid unless ``pid`` is given),
    so ``pg_stat_activity`` tells a study's connections apart (the prefix), maps each to its
    worker (host and pid) and shows who holds the claim lock. PostgreSQL keeps 63 bytes of it,
    so a long host name is cut before the pid is.
    """
    host = socket.gethostname().split(".")[0][:40]
    return f"vivit-hpo:{host}:{os.getpid() if pid is None else pid}"


def _engine_kwargs(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "postgresql":
        # Connections per process: a worker uses at most three at once, its main thread's
        # storage calls, its heartbeat thread's and the claim lock's transaction (held while
        # the main thread counts and creates trials on the other), so the pool never needs
        # more. One stays open between calls; the other two are opened when needed and closed
        # when returned (overflow), so an idle or training worker holds ~1. 50 workers on 8
        # nodes then hold ~50 in steady state and at most 150 if every worker's three uses
        # coincided, which they do not: a worker waiting for the claim lock holds one (its
        # main thread is blocked in the wait), the holder two, the heartbeat runs only during
        # a trial. Measured at 50 workers: mean 51, peak 72, at most 2 per worker
        # (benchmarks/NOTES.md); a stock server allows 100 (97 without the superuser's
        # reserve). The old 4 + 4 per process allowed 400. Beyond that, or with a smaller
        # server, put PgBouncer in transaction mode in front (README).
        return {
            "pool_pre_ping": True,  # a connection killed by a server restart is replaced
            "pool_size": 1,
            "max_overflow": 2,
            "pool_recycle": 1800,
            "pool_timeout": 60,
            "connect_args": {
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "application_name": application_name(),
            },
        }
    # SQLite: the busy timeout makes concurrent writers wait for the lock instead of failing.
    return {"pool_pre_ping": True, "connect_args": {"timeout": 120.0}}


def _check_sqlite(url: URL, *, create: bool) -> None:
    path = Path(str(url.database)).expanduser()
    if not path.parent.is_dir():
        if not create:
            raise StorageError(
                f"storage {mask_url(url)}: folder {path.parent} does not exist; create it or {_FIX}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Under the init lock: switching a new file to WAL while another process does the same
        # fails at once with "database is locked" (the busy timeout does not cover it).
        with _initialising(url):
            con = sqlite3.connect(path, timeout=120.0)
            try:
                # WAL is a property of the file, so setting it once serves every later connection.
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
    except sqlite3.Error as e:
        raise StorageError(
            f"storage {mask_url(url)}: cannot open the SQLite file ({e}); {_FIX}"
        ) from e


def _check_postgres(url: URL) -> None:
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 10}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except (DBAPIError, SAOperationalError) as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e).strip() else "?"
        if "database" in reason and "does not exist" in reason:
            fix = f"create it (createdb -h {url.host or 'localhost'} {url.database})"
        elif "role" in reason or "authentication" in reason or "pg_hba" in reason:
            fix = "check the user name and password in the URL"
        elif "translate host name" in reason:
            fix = f"check the host name {url.host!r}"
        else:
            fix = "check the host, port, database name and credentials, and that the server runs"
        raise StorageError(f"storage {mask_url(url)}: cannot connect ({reason}); {fix}") from e
    except NoSuchModuleError as e:
        raise StorageError(f"storage {mask_url(url)}: no driver ({e}); {_FIX}") from e
    finally:
        engine.dispose()


def _utc_session(dbapi_conn: Any, record: Any) -> None:
    """Every session in UTC. Optuna stores heartbeats as ``timestamp without time zone`` in the
    session's time zone: in a local zone a DST jump would make every heartbeat an hour old (or
    young), and workers with different zones would disagree on their age."""
    cur = dbapi_conn.cursor()
    cur.execute("SET TIME ZONE 'UTC'")
    cur.close()
    dbapi_conn.commit()  # a SET inside a transaction that is rolled back would be undone


@contextlib.contextmanager
def _initialising(url: URL) -> Iterator[None]:
    """Serialise the opening of an SQLite storage between processes: Optuna creates its tables
    on first use, and two processes creating them at once collide."""
    if url.get_backend_name() != "sqlite":
        yield
        return
    lock = Path(str(url.database)).expanduser().with_suffix(".init.lock")
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    connect_wait_s: float = 0.0,
) -> optuna.storages.RDBStorage:
    """Open (and, for a new database, initialise) the study storage.

    Args:
        url: a ``postgresql://`` or ``sqlite:///`` URL; None: ``$VIVIT_HPO_STORAGE`` or the
            embedded default (whose ``storage/`` folder is created).
        heartbeat_interval: seconds between a running trial's heartbeats; None: no heartbeat.
        grace_period: seconds without a heartbeat after which a trial is stale and failed.
        max_retry: how often a stale trial is retried (re-enqueued with its parameters).
        connect_wait_s: how long to wait for a PostgreSQL server that does not answer (a
            worker started during an outage: :data:`CONNECT_WAIT_S`); 0: fail at once.

    Returns:
        An ``RDBStorage``; with a heartbeat, stale trials are retried by
        :class:`~vivit_hpo.search.record.RetryStaleTrial` (reports inherited, pruner state not).

    Raises:
        StorageError: a bad URL, an unsupported database or one that cannot be reached (the
            message shows the URL without its password). Nothing is written in that case.
    """
    raw = resolve_storage_url(url)
    parsed = _parse(raw)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(parsed, create=raw == default_storage_url())
    else:
        # A wrong name, user or password is not transient and fails at once.
        retrying(lambda: _check_postgres(parsed), what="connect", max_wait_s=connect_wait_s)
    callback = RetryStaleTrial(max_retry) if heartbeat_interval else None

    def make() -> optuna.storages.RDBStorage:
        with _initialising(parsed):
            return optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=_engine_kwargs(parsed),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )

    try:
        try:
            storage = retrying(make, what="open the storage")
        except sqlalchemy.exc.IntegrityError:
            # Another process created the tables at the same moment (PostgreSQL); they are
            # there now, and opening again finds them.
            storage = retrying(make, what="open the storage")
        if parsed.get_backend_name() == "postgresql":
            sqlalchemy.event.listen(storage.engine, "connect", _utc_session)
            storage.engine.dispose()  # the connections opened so far predate the listener
        return storage
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise StorageError(
            f"storage {mask_url(parsed)}: cannot initialise Optuna's tables ({e.__class__.__name__}"
            f": {str(e).splitlines()[0]}); check that the user may create tables"
        ) from e
    except RuntimeError as e:  # Optuna's schema version check
        raise StorageError(f"storage {mask_url(parsed)}: {e}".splitlines()[0]) from e


# -- transient errors ----------------------------------------------------------------------------


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
        if isinstance(cur, sqlalchemy.exc.TimeoutError | ClaimLockBusy):
            return True  # the pool was exhausted for a while
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
    """Call ``fn`` and retry it with exponential back-off while it fails transiently.

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

    Args:
        storage: the study's storage.
        what: a few words for the log ("hand trial 3 back").
        stop: checked every half second; True ends the wait (the worker was asked to stop).

    Returns:
        True once the database answers, False when ``stop`` turned true first.

    Raises:
        Exception: an error that is not transient (a dropped database, say), as is.
    """
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


# -- coordination between workers ----------------------------------------------------------------


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


class ClaimLockBusy(Exception):
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


class Heartbeat:
    """Record a running trial's heartbeat every ``interval`` seconds in a daemon thread.

    Optuna's own heartbeat thread dies on the first database error, after which the trial would
    be failed as stale while it still runs; this one logs transient errors and keeps beating.

    When no beat has been written for ``lost_after_s`` (the grace period less one interval:
    before any other process may call the trial stale), a watchdog calls ``on_lost`` once with
    the reason: the worker then stops the trial and leaves it to be failed and resumed from its
    last checkpoint, instead of training on while another worker resumes it. Use as a context
    manager around the trial.
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        trial_id: int,
        interval: float,
        *,
        lost_after_s: float | None = None,
        on_lost: Callable[[str], None] | None = None,
    ):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self.lost_after_s = lost_after_s
        self.on_lost = on_lost
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)
        ]
        if lost_after_s is not None and on_lost is not None:
            self._threads.append(
                threading.Thread(target=self._watch, name=f"watchdog-{trial_id}", daemon=True)
            )

    def _beat(self) -> None:
        try:
            self.storage.record_heartbeat(self.trial_id)
            self._last_beat = time.monotonic()
        except Exception as e:
            transient = is_transient(e)
            if transient:
                CONNECTIVITY.mark_down()
            level = logging.WARNING if transient else logging.ERROR
            _log.log(level, "heartbeat of trial id %d failed: %s", self.trial_id, describe(e))

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            self._beat()
            # After a failed beat, try again sooner: the watchdog counts from the last success.
            failing = time.monotonic() - self._last_beat > self.interval
            wait = min(self.interval, 2.0) if failing else self.interval

    def _watch(self) -> None:
        assert self.lost_after_s is not None and self.on_lost is not None
        while not self._stop.wait(min(1.0, self.interval)):
            silent = time.monotonic() - self._last_beat
            if silent > self.lost_after_s:
                _log.warning(
                    "no heartbeat written for %.0f s; stopping trial id %d", silent, self.trial_id
                )
                self.on_lost(
                    f"no heartbeat written for {silent:.0f} s (the database is out of reach); "
                    "left to resume from its last checkpoint"
                )
                return

    def silence(self) -> None:
        """Stop beating now: this worker no longer vouches for the trial (it stalled)."""
        self._stop.set()

    def __enter__(self) -> Heartbeat:
        # The first beat was written by the claim, under the claim lock (worker.claim_trial).
        self._last_beat = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=max(self.interval, 5.0) + 30.0)
