"""docker/postgres/vivit-role.sql, the init script of docker-compose.yml's PostgreSQL, run with
psql against the real local server: the role it makes is no superuser, owns its database, and
can create Optuna's tables and run a study there (the claim lock and the stale check too)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy
from search_helpers import ROOT
from sqlalchemy.engine import make_url

from vivit_hpo.search.storage import StaleCheck, claim_lock, open_storage

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed"),
]

SQL = ROOT / "docker" / "postgres" / "vivit-role.sql"


def _psql(admin: sqlalchemy.URL, role: str, db: str) -> subprocess.CompletedProcess[str]:
    # What docker/postgres/10-vivit-role.sh runs, as the superuser.
    cmd = ["psql", "--no-psqlrc", "-h", admin.host or "127.0.0.1", "-p", str(admin.port or 5432)]
    cmd += ["-U", admin.username or "postgres", "-d", "postgres"]
    cmd += ["-v", f"role={role}", "-v", "password=w0rker", "-v", f"db={db}", "-f", str(SQL)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def scratch(pg_url: str) -> Iterator[tuple[sqlalchemy.URL, str, str]]:
    """(the superuser's URL, a role name, a database name); both dropped afterwards."""
    admin = make_url(pg_url).set(drivername="postgresql+psycopg2", database="postgres")
    tag = uuid.uuid4().hex[:8]
    role, db = f"vivit_t{tag}", f"vivit_hpo_t{tag}"
    yield admin, role, db
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        conn.execute(sqlalchemy.text(f'DROP ROLE IF EXISTS "{role}"'))
    engine.dispose()


def test_the_init_script_makes_a_role_that_runs_a_study_without_being_superuser(
    scratch: tuple[sqlalchemy.URL, str, str],
) -> None:
    admin, role, db = scratch
    for _ in range(2):  # idempotent: a second run (by hand, on an old volume) changes nothing
        done = _psql(admin, role, db)
        assert done.returncode == 0, done.stderr

    url = admin.set(username=role, password="w0rker", database=db)
    storage = open_storage(url.render_as_string(hide_password=False))  # Optuna's tables
    try:
        study = optuna.create_study(study_name="s", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        assert len(study.get_trials()) == 3
        with claim_lock(storage, "s"):  # advisory locks, and the stale check's server uptime
            assert StaleCheck(storage).stale_ids(study) == []
        with storage.engine.connect() as conn:
            me, superuser = conn.execute(
                sqlalchemy.text(
                    "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
                )
            ).one()
            owner = conn.execute(
                sqlalchemy.text("SELECT tableowner FROM pg_tables WHERE tablename = 'trials'")
            ).scalar()
            assert (me, superuser, owner) == (role, False, role)
            with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
                conn.execute(sqlalchemy.text(f'CREATE ROLE "{role}_x"'))
    finally:
        storage.engine.dispose()
