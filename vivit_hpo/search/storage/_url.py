"""Storage URLs: which database a command uses, and how a URL is shown and checked.

The URL comes from ``--storage``, else ``VIVIT_HPO_STORAGE``, else the embedded default
``storage/vivit-hpo.db`` (under ``$VIVIT_HPO_HOME`` when set, else the current directory).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from vivit_hpo import settings
from vivit_hpo.errors import StorageError

__all__ = [
    "DEFAULT_DB",
    "ENV_HOME",
    "ENV_STORAGE",
    "application_name",
    "default_storage_url",
    "mask_url",
    "resolve_storage_url",
    "sqlite_path",
    "vivit_home",
]

ENV_STORAGE = settings.STORAGE.name
ENV_HOME = settings.HOME.name
DEFAULT_DB = settings.EMBEDDED_DB
_FIX = "pass --storage postgresql://user:password@host:5432/db or sqlite:///path/to/file.db"


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
