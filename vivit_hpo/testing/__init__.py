"""Test fixtures shipped with the package (as ``optuna.testing``): a private PostgreSQL server
that a test may stop, the tiny study spec the service tests, the chaos driver and the
connections benchmark run, and the faults they inject into real workers (:mod:`.faults`: a
training that hangs, a worker killed mid-way through ending an epoch, a node whose checkpoint
writes fail, a torn checkpoint).

Nothing in the study service imports this package.
"""

from __future__ import annotations

from vivit_hpo.testing.faults import file_size_limit, hang_env, kill_mid_epoch_env, tear
from vivit_hpo.testing.pgserver import PostgresServer, find_pg_bin, postgres_server
from vivit_hpo.testing.tiny import TINY_SPACE, tiny_base, tiny_spec

__all__ = [
    "TINY_SPACE",
    "PostgresServer",
    "file_size_limit",
    "find_pg_bin",
    "hang_env",
    "kill_mid_epoch_env",
    "postgres_server",
    "tear",
    "tiny_base",
    "tiny_spec",
]
