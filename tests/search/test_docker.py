"""docker-compose.yml: valid, the password required from the environment, the dashboard local
only, PostgreSQL health-checked on a volume, the worker scalable on NVIDIA GPUs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_compose_requires_the_passwords() -> None:
    missing = _config(VIVIT_DB_PASSWORD="w0rker")
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr
    missing = _config(POSTGRES_PASSWORD="s3cret")
    assert missing.returncode != 0
    assert "VIVIT_DB_PASSWORD" in missing.stderr
    assert COMPOSE is not None
    env = os.environ | {"POSTGRES_PASSWORD": "s3cret", "VIVIT_DB_PASSWORD": "w0rker", "STUDY": "x"}
    quiet = subprocess.run(
        [COMPOSE, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert quiet.returncode == 0 and not quiet.stdout, quiet.stderr


def test_compose_services() -> None:
    got = _config(POSTGRES_PASSWORD="s3cret", VIVIT_DB_PASSWORD="w0rker", STUDY="full")
    assert got.returncode == 0, got.stderr
    services = yaml.safe_load(got.stdout)["services"]
    pg, dash, worker = services["postgres"], services["dashboard"], services["worker"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any("/var/lib/postgresql/data" in str(v) for v in pg["volumes"])
    assert all(str(p).startswith("127.0.0.1:") for p in dash["ports"])
    # The password reaches the dashboard in its environment, never on its command line.
    assert "entrypoint" not in dash and dash["command"][0] == "dashboard"
    assert "w0rker" not in json.dumps(dash["command"]) and "STORAGE" not in str(dash["command"])
    assert "w0rker" in dash["environment"]["VIVIT_HPO_STORAGE"]
    assert "w0rker@postgres:5432" in worker["environment"]["VIVIT_HPO_STORAGE"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["command"][:2] == ["worker", "full"] and "cuda:any" in worker["command"]
    assert "container_name" not in worker  # scalable with --scale worker=N
    # docker stop: SIGTERM through an init, and time to checkpoint the trial before SIGKILL.
    assert worker["init"] is True
    grace = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", worker["stop_grace_period"])
    assert grace is not None and int(grace[1] or 0) * 60 + int(grace[2] or 0) >= 120


def test_compose_connects_as_a_role_of_its_own_and_keeps_reports_and_bounds_restarts() -> None:
    got = _config(POSTGRES_PASSWORD="s3cret", VIVIT_DB_PASSWORD="w0rker", STUDY="full")
    assert got.returncode == 0, got.stderr
    tree = yaml.safe_load(got.stdout)
    pg, dash, worker = (tree["services"][k] for k in ("postgres", "dashboard", "worker"))
    # The superuser (postgres) administers; the workers and the dashboard are vivit, whose role
    # and database the init script makes (tests/search/test_pg_role.py runs it for real).
    assert pg["environment"]["POSTGRES_USER"] == "postgres"
    assert "POSTGRES_DB" not in pg["environment"]
    assert pg["environment"]["VIVIT_DB_PASSWORD"] == "w0rker"
    init = [str(v) for v in pg["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert init and "10-vivit-role.sh" in init[0], pg["volumes"]
    assert any("/opt/vivit-hpo-init/vivit-role.sql" in str(v) for v in pg["volumes"])
    for service in (dash, worker):
        env = service["environment"]
        assert env["VIVIT_HPO_STORAGE"].startswith("postgresql+psycopg2://vivit:w0rker@")
        assert "s3cret" not in json.dumps(env)  # the superuser's password stays with postgres
        # Uploaded reports outlive the containers: the artifact store is a named volume.
        store = env["VIVIT_HPO_ARTIFACT_STORE"]
        assert any(str(v).startswith(f"reports:{store}") for v in service["volumes"]), service
    assert "reports" in tree["volumes"]
    # A usage error (exit 2) or a failing node (exit 75) is not restarted for ever.
    policy, _, attempts = worker["restart"].partition(":")
    assert policy == "on-failure" and 1 <= int(attempts) <= 5, worker["restart"]


@pytest.mark.postgres
def test_compose_dashboard_command_serves_the_storage_of_its_environment(pg_url: str) -> None:
    # The dashboard service's own command, for real (minus the container), with a URL that
    # carries a password (trust auth accepts any): it serves, and the password is on no
    # command line and in no output.
    got = _config(POSTGRES_PASSWORD="s3cret", VIVIT_DB_PASSWORD="w0rker", STUDY="full")
    command = yaml.safe_load(got.stdout)["services"]["dashboard"]["command"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = [c for c in command if c not in ("--host", "0.0.0.0", "--port", "8080")]
    url = pg_url.replace("postgres@", "postgres:s3cret@")
    env = os.environ | {"VIVIT_HPO_STORAGE": url, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vivit_hpo", *command, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.3)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "s3cret" not in cmdline and "postgres" not in cmdline
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "s3cret" not in out and "postgres:***@127.0.0.1" in out, out
