"""docker-compose.yml: valid, the password required from the environment, the dashboard local
only, PostgreSQL health-checked on a volume, the worker scalable on NVIDIA GPUs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from search_helpers import ROOT

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")


def _config(**env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    full = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"} | env
    return subprocess.run(
        [COMPOSE, "config"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60
    )


def test_compose_requires_the_password() -> None:
    missing = _config()
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr


def test_compose_services() -> None:
    got = _config(POSTGRES_PASSWORD="s3cret", STUDY="full")
    assert got.returncode == 0, got.stderr
    services = yaml.safe_load(got.stdout)["services"]
    pg, dash, worker = services["postgres"], services["dashboard"], services["worker"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any("/var/lib/postgresql/data" in str(v) for v in pg["volumes"])
    assert all(str(p).startswith("127.0.0.1:") for p in dash["ports"])
    assert "s3cret@postgres:5432" in worker["environment"]["VIVIT_HPO_STORAGE"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["command"][:2] == ["worker", "full"] and "cuda:any" in worker["command"]
    assert "container_name" not in worker  # scalable with --scale worker=N
    # docker stop: SIGTERM through an init, and time to checkpoint the trial before SIGKILL.
    assert worker["init"] is True
    grace = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", worker["stop_grace_period"])
    assert grace is not None and int(grace[1] or 0) * 60 + int(grace[2] or 0) >= 120
