"""Storage URLs, masking, transient errors, and the embedded SQLite storage shared by several
processes at once (with the heartbeat on)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState
from search_helpers import finish, hold_claim_lock_in_child, start_worker, worker_env

from vivit_hpo.bench.connections import sampling
from vivit_hpo.bench.coordinator_overhead import _spec_text, bench_worker, summarize
from vivit_hpo.errors import StorageError
from vivit_hpo.search.storage import (
    STORAGE_WAITS,
    ClaimLockBusy,
    ClaimTimeouts,
    claim_lock,
    default_storage_url,
    is_transient,
    mask_url,
    open_storage,
    resolve_storage_url,
    retrying,
)
from vivit_hpo.search.study import load_study


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert "hunter2" not in mask_url("u:hunter2@db/x")
    assert mask_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_mask_url_hides_passwords_in_the_query_string() -> None:
    # libpq takes the password (and the client key's) as query parameters too.
    url = "postgresql://u@db/x?password=hunter2&sslmode=require&sslpassword=keypw&PASSWORD=up"
    shown = mask_url(url)
    assert "hunter2" not in shown and "keypw" not in shown and "=up" not in shown, shown
    assert "password=***" in shown and "sslpassword=***" in shown and "PASSWORD=***" in shown
    assert "sslmode=require" in shown  # the rest is shown as it is
    both = mask_url("postgresql://u:inline@db/x?password=a&password=b")
    assert both == "postgresql://u:***@db/x?password=***&password=***", both
    assert mask_url("postgresql://u@db/x?passfile=pgpass") == "postgresql://u@db/x?passfile=pgpass"


def test_default_is_sqlite_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    monkeypatch.delenv("VIVIT_HPO_STORAGE", raising=False)
    assert default_storage_url() == f"sqlite:///{tmp_path}/storage/vivit-hpo.db"
    assert resolve_storage_url(None) == default_storage_url()
    monkeypatch.setenv("VIVIT_HPO_STORAGE", "postgresql://x@y/z")
    assert resolve_storage_url(None) == "postgresql://x@y/z"
    assert resolve_storage_url("sqlite:///q.db") == "sqlite:///q.db"
    monkeypatch.delenv("VIVIT_HPO_STORAGE")
    storage = open_storage(None)
    assert (tmp_path / "storage" / "vivit-hpo.db").is_file()
    with storage.engine.connect() as conn:  # WAL: readers and the writer do not block
        mode = conn.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


def test_explicit_sqlite_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/nope/x.db")
    assert not (tmp_path / "nope").exists()


def test_transient_errors_are_recognised() -> None:
    dead = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    assert is_transient(dead)
    try:
        try:
            raise dead
        except sqlalchemy.exc.OperationalError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(ValueError("bad value"))
    assert not is_transient(sqlalchemy.exc.IntegrityError("x", {}, Exception("dup")))


def test_a_thread_in_a_retried_call_counts_as_waiting_for_the_database() -> None:
    # What the progress watchdog reads: a wait for the database is no hang of its thread.
    me = threading.get_ident()
    inside: list[float] = []
    retrying(lambda: inside.append(STORAGE_WAITS.since(me)), what="read")
    assert inside == [0.0]  # waiting while in the call
    assert 0.0 < STORAGE_WAITS.since(me) < float("inf")  # since the call ended
    # Another thread's wait is not this one's.
    seen: list[float] = []
    other = threading.Thread(
        target=lambda: retrying(lambda: seen.append(STORAGE_WAITS.since(me)), what="read")
    )
    other.start()
    other.join()
    assert seen[0] > 0.0 and STORAGE_WAITS.since(other.ident or 0) < float("inf")


def _connect(url: str) -> None:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres@127.0.0.1:5432/no_such_db_vivit",
        "postgresql+psycopg2://no_such_role_vivit:pw@127.0.0.1:5432/test",
        "postgresql+psycopg2://postgres@no-such-host.invalid:5432/test",
    ],
)
def test_a_wrong_database_user_or_host_is_not_retried(url: str) -> None:
    # The real errors of the local server (and resolver): retrying cannot cure them.
    start = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError) as got:
        retrying(lambda: _connect(url), what="connect", max_wait_s=60, first_delay_s=2.0)
    assert time.monotonic() - start < 2.0  # at once: no back-off
    assert not is_transient(got.value)


@pytest.mark.postgres
def test_a_connection_killed_by_the_server_is_retried(pg_url: str) -> None:
    # What a server restart does to a live connection (57P01, admin shutdown), for real.
    engine = sqlalchemy.create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg2://"),
        poolclass=sqlalchemy.pool.NullPool,
    )
    calls = []
    with engine.connect() as victim, engine.connect() as killer:
        pid = victim.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
        killer.execute(sqlalchemy.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(sqlalchemy.exc.OperationalError) as got:
            victim.execute(sqlalchemy.text("SELECT 1"))
    assert is_transient(got.value), got.value

    def fails_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise got.value
        return 7

    assert retrying(fails_once, what="read", first_delay_s=0.01) == 7
    engine.dispose()


@pytest.mark.postgres
def test_cli_on_a_database_that_does_not_exist_fails_at_once(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/no_such_db_vivit"
    start = time.monotonic()
    got = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "study", "list", "--storage", url],
        cwd=tmp_path,
        env=worker_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 2, got.stdout + got.stderr
    assert time.monotonic() - start < 30  # the interpreter's start-up; no retries
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in got.stderr, got.stderr
    assert '"no_such_db_vivit" does not exist' in lines[0] and "createdb" in lines[0]


def test_embedded_sqlite_is_shared_by_three_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three worker processes claim, report and tell at once on one SQLite file."""
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    url = default_storage_url()
    storage = open_storage(url)
    import optuna

    name = "shared"
    text = _spec_text(trials=45, epochs=3, heartbeat_s=1)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("spec", text)
    ctx = mp.get_context("spawn")
    outs = [str(tmp_path / f"w{i}.jsonl") for i in range(3)]
    procs = [
        ctx.Process(target=bench_worker, args=(name, url, text, outs[i], i, 45)) for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]

    per_process = [[json.loads(line) for line in Path(o).read_text().splitlines()] for o in outs]
    assert all(rows for rows in per_process)  # every process ran trials
    rows = [r for rows in per_process for r in rows]
    numbers = sorted(r["number"] for r in rows)
    assert numbers == list(range(45))  # each trial claimed by exactly one process
    trials = load_study(open_storage(url), name).get_trials()
    assert len(trials) == 45
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.intermediate_values for t in trials)
    s = summarize(rows)
    assert set(s["overall"]) >= {"ask (claim + sample)", "tell", "total per trial"}


LockHolder = tuple[mp.Process, Connection, str]


@pytest.fixture()
def lock_holder(pg_url: str) -> Iterator[Callable[[float], LockHolder]]:
    """``lock_holder(idle_s)`` starts a process that holds a fresh study name's claim lock with
    that idle timeout.

    It returns the process, the pipe to it (``send("release")`` lets it go; it then sends how
    the lock's transaction ended) and the study name; the process is resumed and killed after
    the test.
    """
    ctx = mp.get_context("spawn")
    procs: list[mp.Process] = []

    def start(idle_s: float) -> LockHolder:
        ours, theirs = ctx.Pipe()
        name = f"lock-{uuid.uuid4().hex[:10]}"
        proc = ctx.Process(target=hold_claim_lock_in_child, args=(pg_url, name, idle_s, theirs))
        proc.start()
        procs.append(proc)
        assert ours.poll(120) and ours.recv() == "held"
        return proc, ours, name

    yield start
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.join(30)


@pytest.mark.postgres
def test_a_stopped_holder_loses_the_claim_lock(
    lock_holder: Callable[[float], LockHolder], pg_url: str
) -> None:
    # A hung worker (SIGSTOP) inside the claim: the server ends its session after the holder's
    # idle timeout (2 s), so another worker gets the lock before its own 30 s lock_timeout.
    proc, pipe, name = lock_holder(2.0)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)
    storage = open_storage(pg_url)
    try:
        with claim_lock(storage, name, timeouts=ClaimTimeouts(idle_s=60.0, wait_s=30.0)):
            pass
    finally:
        storage.engine.dispose()
    os.kill(proc.pid, signal.SIGCONT)
    pipe.send("release")
    assert pipe.poll(60)
    ended = pipe.recv()
    # Its release fails (the session is gone): logged, not raised, since the claim's own writes
    # committed on other connections and raising would have the worker claim a second trial.
    assert ended == "released", ended


def _expect_busy(claim: Callable[[], str], out: list[BaseException]) -> None:
    try:
        claim()
    except ClaimLockBusy as e:
        out.append(e)


@pytest.mark.postgres
def test_a_waiter_past_lock_timeout_gets_a_transient_error(
    lock_holder: Callable[[float], LockHolder], pg_url: str
) -> None:
    # A holder stuck for longer than the waiter's lock_timeout (its own idle timeout is long).
    _, pipe, name = lock_holder(60.0)
    storage = open_storage(pg_url)
    short = ClaimTimeouts(idle_s=60.0, wait_s=1.5)

    def claim() -> str:
        with claim_lock(storage, name, timeouts=short):
            return "claimed"

    try:
        # While it waits it holds no server connection queued on the lock (it tries, with
        # back-off): workers queueing at a claim storm cost the server (or PgBouncer) nothing.
        waited: list[BaseException] = []
        waiter = threading.Thread(target=lambda: _expect_busy(claim, waited))
        waiter.start()
        queued = []
        while waiter.is_alive():
            with storage.engine.connect() as conn:
                queued.append(
                    conn.execute(
                        sqlalchemy.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                        )
                    ).scalar()
                )
            time.sleep(0.05)
        assert len(queued) >= 3 and not any(queued), queued
        (got,) = waited
        assert isinstance(got, ClaimLockBusy) and is_transient(got)
        # So retrying keeps claiming until the holder lets go.
        attempts: list[int] = []
        threading.Timer(2.5, pipe.send, ("release",)).start()
        assert retrying(lambda: attempts.append(1) or claim(), what="claim", first_delay_s=0.2) == (
            "claimed"
        )
        assert len(attempts) >= 2
        assert pipe.poll(30) and pipe.recv() == "released"
    finally:
        storage.engine.dispose()


@pytest.mark.postgres
def test_workers_hold_one_connection_and_never_more_than_three(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    """The pool's bound, sampled on the server while three real workers run a study: at most
    three connections per worker (main thread, heartbeat, claim lock), and one most of the time
    (the other two are closed when returned, not kept open)."""
    spec_path = write_spec(budget={"n_trials": 6}, epochs=2)
    storage = open_storage(pg_url)
    from vivit_hpo.search.spec import load_spec
    from vivit_hpo.search.study import create_study

    create_study(storage, study_name, load_spec(spec_path))
    storage.engine.dispose()
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [start_worker(study_name, pg_url, tmp_path, log) for log in logs]
    with sampling(pg_url, [p.pid for p in procs], every=0.1) as samples:
        codes = finish(procs, 240, logs)
    assert codes == [0, 0, 0]
    held = {p.pid: [s.per_pid[p.pid] for s in samples if p.pid in s.per_pid] for p in procs}
    assert all(len(counts) >= 5 for counts in held.values()), held  # each seen while it ran
    assert max(sum(s.per_pid.values()) for s in samples) <= 3 * len(procs)
    for counts in held.values():
        assert max(counts) <= 3, counts
        assert statistics.median(counts) == 1, counts


def test_processes_opening_a_new_sqlite_storage_at_once_all_succeed(tmp_path: Path) -> None:
    # As when `run` creates the embedded storage while its first poll, a dashboard or a worker
    # opens it: Optuna creates its tables on first use, and two creators collide.
    code = (
        "import sys, time; from vivit_hpo.search.storage import open_storage; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "open_storage(sys.argv[1]).get_all_studies()"
    )
    for i in range(3):
        url = f"sqlite:///{tmp_path / f'db{i}.db'}"
        start = str(time.time() + 4.0)  # all of them at once, after their imports
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url, start],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        errors = [p.communicate()[1] for p in procs if p.wait() != 0]
        assert not errors, errors[0][-2000:]


def test_a_stopped_holder_of_the_sqlite_claim_lock_blocks_nobody_for_ever(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.db'}"
    code = (
        "import sys, time; from vivit_hpo.search.storage import claim_lock, open_storage; "
        "cm = claim_lock(open_storage(sys.argv[1]), 's'); cm.__enter__(); "
        "print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)  # Ctrl-Z, a debugger: the lock stays held
        storage = open_storage(url)
        with (
            pytest.raises(ClaimLockBusy) as got,
            claim_lock(storage, "s", timeouts=ClaimTimeouts(idle_s=60.0, wait_s=1.0)),
        ):
            pass
        assert is_transient(got.value)
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()
    with claim_lock(storage, "s", timeouts=ClaimTimeouts(idle_s=60.0, wait_s=1.0)):
        pass  # free again once the holder is gone
