"""Where studies live: PostgreSQL for real use, an embedded SQLite file by default.

The URL comes from ``--storage``, else ``VIVIT_HPO_STORAGE``, else the embedded default
``storage/vivit-hpo.db`` (under ``$VIVIT_HPO_HOME`` when set, else the current directory).

- :mod:`._url`: which URL, shown without its secrets (:func:`mask_url`), checked (``_parse``).
- :mod:`._open`: :func:`open_storage` (engine settings, SQLite's WAL, the PostgreSQL check)
  and :func:`get_storage`, which takes a URL or an opened storage.
- :mod:`._retry`: :func:`retrying` rides out a database restart (exponential back-off on
  disconnects and ``database is locked``); :func:`is_transient` says what a retry can cure;
  :data:`STORAGE_WAITS` says which threads wait for the database (no hang, for the watchdog).
- :mod:`._claim`: the claim lock between workers and :class:`StaleCheck`.
- :mod:`._heartbeat`: :class:`Heartbeat`, a running trial's heartbeat thread.
"""

from __future__ import annotations

from vivit_hpo.search.storage._claim import ClaimLockBusy, ClaimTimeouts, StaleCheck, claim_lock
from vivit_hpo.search.storage._heartbeat import Heartbeat
from vivit_hpo.search.storage._open import CONNECT_WAIT_S, get_storage, open_storage
from vivit_hpo.search.storage._retry import (
    CONNECTIVITY,
    DEFAULT_MAX_WAIT_S,
    ENV_MAX_WAIT,
    STORAGE_WAITS,
    Connectivity,
    StorageWaits,
    describe,
    give_up_s,
    is_transient,
    retrying,
    wait_for_database,
)
from vivit_hpo.search.storage._url import (
    DEFAULT_DB,
    ENV_HOME,
    ENV_STORAGE,
    application_name,
    default_storage_url,
    mask_url,
    resolve_storage_url,
    sqlite_path,
    vivit_home,
)

__all__ = [
    "CONNECTIVITY",
    "CONNECT_WAIT_S",
    "DEFAULT_DB",
    "DEFAULT_MAX_WAIT_S",
    "ENV_HOME",
    "ENV_MAX_WAIT",
    "ENV_STORAGE",
    "STORAGE_WAITS",
    "ClaimLockBusy",
    "ClaimTimeouts",
    "Connectivity",
    "Heartbeat",
    "StaleCheck",
    "StorageWaits",
    "application_name",
    "claim_lock",
    "default_storage_url",
    "describe",
    "get_storage",
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
