"""Opening the study storage: PostgreSQL for real use, an embedded SQLite file by default.

Why SQLite for the embedded default, through Optuna's ``RDBStorage``: it is one file that
several local worker processes share at once (WAL journal: readers never block the one writer;
a generous busy timeout makes writers queue instead of failing), it keeps Optuna's heartbeat
(the journal storages have none in Optuna 5, so a dead worker's trial would never be failed and
retried), and ``optuna-dashboard sqlite:///storage/vivit-hpo.db`` reads it as it is. It is meant
for one machine: SQLite over a network file system is not safe, so multi-machine studies use
PostgreSQL.

The pool pre-pings connections so that a connection killed by a restart is replaced, not used.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, NoSuchModuleError
from sqlalchemy.exc import OperationalError as SAOperationalError

from vivit_hpo.errors import StorageError
from vivit_hpo.search.record import RetryStaleTrial
from vivit_hpo.search.storage._retry import describe, give_up_s, is_transient, retrying
from vivit_hpo.search.storage._url import (
    _FIX,
    _parse,
    application_name,
    default_storage_url,
    mask_url,
    resolve_storage_url,
)

__all__ = ["CONNECT_WAIT_S", "get_storage", "open_storage"]

CONNECT_WAIT_S = 60.0  # how long a worker waits, at its start, for a server that is down

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
            worker started during an outage: :data:`CONNECT_WAIT_S`), at its first connection
            and while Optuna's storage is made (at least the give-up time there); 0: a server
            that does not answer at first fails at once.

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

    # An outage may begin after the first connection: making the storage waits as long.
    wait_s = max(give_up_s(), connect_wait_s)
    try:
        try:
            storage = retrying(make, what="open the storage", max_wait_s=wait_s)
        except sqlalchemy.exc.IntegrityError:
            # Another process created the tables at the same moment (PostgreSQL); they are
            # there now, and opening again finds them.
            storage = retrying(make, what="open the storage", max_wait_s=wait_s)
        if parsed.get_backend_name() == "postgresql":
            sqlalchemy.event.listen(storage.engine, "connect", _utc_session)
            storage.engine.dispose()  # the connections opened so far predate the listener
        return storage
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        if is_transient(e):  # the server went away after the first connection, and stayed
            raise StorageError(
                f"storage {mask_url(parsed)}: cannot connect ({describe(e)}); check the host, "
                "port, database name and credentials, and that the server runs"
            ) from e
        raise StorageError(
            f"storage {mask_url(parsed)}: cannot initialise Optuna's tables ({e.__class__.__name__}"
            f": {str(e).splitlines()[0]}); check that the user may create tables"
        ) from e
    except RuntimeError as e:  # Optuna's schema version check
        raise StorageError(f"storage {mask_url(parsed)}: {e}".splitlines()[0]) from e


def get_storage(target: str | BaseStorage | None) -> BaseStorage:
    """The storage ``target`` names: opened from a URL (None: :func:`resolve_storage_url`'s
    ``$VIVIT_HPO_STORAGE`` or the embedded default), or ``target`` itself when it is already an
    opened storage, so that a function that takes either opens nothing twice.

    Raises:
        StorageError: a URL that :func:`open_storage` cannot open.
    """
    if isinstance(target, BaseStorage):
        return target
    return open_storage(target)
