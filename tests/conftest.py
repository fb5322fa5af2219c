"""Fixtures shared by the whole suite: tiny simulated sessions and a PostgreSQL URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vivit_hpo.testing.pgserver import PostgresServer, find_pg_bin, postgres_server

# Two cores are shared by the whole suite; intra-op threads beyond that only thrash.
torch.set_num_threads(min(2, os.cpu_count() or 1))

PG_URL = os.environ.get("VIVIT_HPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny simulated sessions (different unit counts) with their truth and oracle."""
    from vivit_hpo.data import synthesize

    out = tmp_path_factory.mktemp("sim")
    synthesize(
        out, sessions=2, neurons=[12, 9], frames=3000, size=(16, 16), frame_rate=60.0, seed=1
    )
    return out


@pytest.fixture()
def pg_url() -> str:
    return PG_URL


@pytest.fixture()
def private_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start (outage tests)."""
    if find_pg_bin() is None:
        pytest.skip("PostgreSQL is not installed here")
    with postgres_server() as server:
        yield server
