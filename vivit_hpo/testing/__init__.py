"""Test fixtures shipped with the package (as ``optuna.testing``): a private PostgreSQL server
that a test may stop, and the tiny study spec the service tests, the chaos driver and the
connections benchmark run.

Nothing in the study service imports this package.
"""

from __future__ import annotations

from vivit_hpo.testing.pgserver import PostgresServer, find_pg_bin, postgres_server
from vivit_hpo.testing.tiny import TINY_SPACE, tiny_base, tiny_spec

__all__ = [
    "TINY_SPACE",
    "PostgresServer",
    "find_pg_bin",
    "postgres_server",
    "tiny_base",
    "tiny_spec",
]
