"""How many PostgreSQL connections a study's workers hold: N real workers, sampled as they run.

    python benchmarks/connections.py --storage postgresql://... --workers 50 --out conns.json

Creates a tiny study on simulated data (``vivit-hpo study create`` of a spec whose ``data.synth``
writes one small session; a ViViT of one block per axis, 1 epoch of a few steps), starts
``--workers`` real ``vivit-hpo worker`` processes on the CPU (``OMP_NUM_THREADS=1``) and samples
``pg_stat_activity`` every ``--every`` seconds until every worker has exited (the budget is
done). It prints, and writes as JSON, the maximum and mean of the workers' connections in all
and per worker (told apart by :func:`~vivit_hpo.search.storage.application_name`), of those
inside a transaction, and of the server's client connections against its ``max_connections``.
The study is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
import yaml

from vivit_hpo import settings
from vivit_hpo.testing import tiny_base, tiny_spec

__all__ = ["Sample", "main", "sample_connections", "sampling", "summarize"]

_SAMPLER_NAME = "connections-bench"  # the sampler's own connection, outside the vivit-hpo prefix


@dataclass(frozen=True)
class Sample:
    """One look at ``pg_stat_activity``.

    Attributes:
        at: seconds since sampling began.
        per_pid: connections of each watched worker pid that has any.
        busy: the watched workers' connections inside a transaction (not ``idle``).
        vivit: every connection whose application_name starts with ``vivit-hpo``.
        total: every client connection of the server (the sampler's own included).
    """

    at: float
    per_pid: dict[int, int]
    busy: int
    vivit: int
    total: int


def sample_connections(conn: sqlalchemy.Connection, pids: Collection[int], at: float) -> Sample:
    """Count the client connections of the server now, and those of the worker ``pids``."""
    from vivit_hpo.search.storage import application_name

    names = {application_name(pid): pid for pid in pids}
    rows = conn.execute(
        sqlalchemy.text(
            "SELECT application_name, state FROM pg_stat_activity "
            "WHERE backend_type = 'client backend'"
        )
    ).all()
    per_pid: dict[int, int] = {}
    busy = 0
    for app, state in rows:
        pid = names.get(app)
        if pid is not None:
            per_pid[pid] = per_pid.get(pid, 0) + 1
            busy += state != "idle"
    vivit = sum(1 for app, _ in rows if (app or "").startswith("vivit-hpo"))
    return Sample(at, per_pid, busy, vivit, len(rows))


def _sampler_engine(storage_url: str) -> sqlalchemy.Engine:
    # psycopg2, as the storage uses (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://).
    url = sqlalchemy.make_url(storage_url)
    if "+" not in url.drivername:
        url = url.set(drivername="postgresql+psycopg2")
    return sqlalchemy.create_engine(
        url,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"application_name": _SAMPLER_NAME, "connect_timeout": 10},
    )


@contextmanager
def sampling(storage_url: str, pids: Collection[int], every: float = 0.2) -> Iterator[list[Sample]]:
    """Sample the connections every ``every`` s in a thread, on one connection of its own.

    Yields the list the samples are appended to; sampling stops when the block ends.
    """
    samples: list[Sample] = []
    stop = threading.Event()
    engine = _sampler_engine(storage_url)
    failed: list[BaseException] = []

    def run() -> None:
        start = time.monotonic()
        try:
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")  # a fresh snapshot each time
                while not stop.is_set():
                    samples.append(sample_connections(conn, pids, time.monotonic() - start))
                    stop.wait(every)
        except BaseException as e:  # re-raised in the caller's thread below
            failed.append(e)

    thread = threading.Thread(target=run, name="connection-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)
        engine.dispose()
    if failed:
        raise failed[0]


def summarize(samples: Sequence[Sample], workers: int) -> dict[str, Any]:
    """Maxima and means of the samples.

    ``per_worker_mean`` averages over the samples in which a worker had any connection (a
    worker still importing torch, or gone, holds none and would dilute the mean).
    """
    if not samples:
        return {"samples": 0}
    held = [n for s in samples for n in s.per_pid.values()]
    ours = [sum(s.per_pid.values()) for s in samples]
    return {
        "workers": workers,
        "samples": len(samples),
        "seconds": round(samples[-1].at, 1),
        "workers_max": max(ours),
        "workers_mean": round(statistics.fmean(ours), 2),
        "per_worker_max": max(held, default=0),
        "per_worker_mean": round(statistics.fmean(held), 2) if held else 0.0,
        "busy_max": max(s.busy for s in samples),
        "busy_mean": round(statistics.fmean(s.busy for s in samples), 2),
        "vivit_max": max(s.vivit for s in samples),
        "server_max": max(s.total for s in samples),
        "server_mean": round(statistics.fmean(s.total for s in samples), 2),
    }


def _spec(workers: int, trials_per_worker: int, steps: int, artifacts: Path) -> dict[str, Any]:
    """A study whose trials take seconds: the point is the storage traffic, not the model."""
    return tiny_spec(
        description=f"connections benchmark, {workers} workers",
        base={"config": tiny_base(steps_per_epoch=steps)},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        epochs=1,
        sampler={"name": "tpe", "seed": 0},
        pruner={"name": "none"},
        budget={"n_trials": workers * trials_per_worker},
        # 50 processes on a few cores starve each other; a long grace keeps them from being
        # failed as stale, and the short interval keeps the heartbeat thread's connection busy.
        heartbeat={"interval_s": 2, "grace_s": 120, "max_retry": 1},
        artifacts={"dir": str(artifacts), "keep_best": 1},
    )


def _print_table(summary: dict[str, Any], max_connections: str) -> None:
    rows = [
        ("connections of the workers", summary["workers_max"], summary["workers_mean"]),
        ("  per worker (while connected)", summary["per_worker_max"], summary["per_worker_mean"]),
        ("  inside a transaction", summary["busy_max"], summary["busy_mean"]),
        ("all client connections of the server", summary["server_max"], summary["server_mean"]),
    ]
    print(
        f"{summary['workers']} workers, {summary['samples']} samples over {summary['seconds']} s"
        f" (max_connections={max_connections})"
    )
    print(f"{'':40s} {'max':>6s} {'mean':>7s}")
    for label, top, mean in rows:
        print(f"{label:40s} {top:>6} {mean:>7}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--storage", required=True, help="postgresql://user@host:5432/db")
    ap.add_argument("--workers", type=int, default=8, help="worker processes (default 8)")
    ap.add_argument("--trials-per-worker", type=int, default=2, help="budget / workers")
    ap.add_argument("--steps", type=int, default=4, help="training steps in the one epoch")
    ap.add_argument("--every", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--timeout", type=float, default=900.0, help="kill the workers after this")
    ap.add_argument("--work-dir", type=Path, help="for the spec, data, logs (default: temp)")
    ap.add_argument("--out", type=Path, help="write the summary and samples as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the study in the database")
    args = ap.parse_args(argv)
    for flag in ("workers", "trials_per_worker", "steps"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    if not args.every > 0 or not args.timeout > 0:
        ap.error("--every and --timeout must be positive")

    from vivit_hpo.errors import VivitHpoError
    from vivit_hpo.search.storage import mask_url, open_storage

    try:
        storage = open_storage(args.storage)
    except VivitHpoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if storage.engine.dialect.name != "postgresql":
        print(f"error: --storage {mask_url(args.storage)}: needs PostgreSQL", file=sys.stderr)
        return 2
    with storage.engine.connect() as conn:
        max_connections = str(conn.execute(sqlalchemy.text("SHOW max_connections")).scalar())
    storage.engine.dispose()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vivit-conns-"))
    work.mkdir(parents=True, exist_ok=True)
    name = f"conns-{uuid.uuid4().hex[:8]}"
    spec_path = work / "spec.yaml"
    spec = _spec(args.workers, args.trials_per_worker, args.steps, work / "artifacts")
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", settings.HOME.name: str(work)}
    cmd = [sys.executable, "-m", "vivit_hpo"]
    subprocess.run(
        [*cmd, "study", "create", name, "--spec", str(spec_path), "--storage", args.storage],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(args.workers):
            with open(logs / f"worker-{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*cmd, "worker", name, "--storage", args.storage, "--device", "cpu"],
                        env=env,
                        cwd=work,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + args.timeout
        with sampling(args.storage, [p.pid for p in procs], args.every) as samples:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        killed = sum(p.poll() is None for p in procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if not args.keep:
            subprocess.run(
                [*cmd, "study", "delete", name, "--yes", "--storage", args.storage],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    codes = [p.returncode for p in procs]
    summary = summarize(samples, args.workers)
    summary.update(
        max_connections=max_connections,
        exit_codes={str(c): codes.count(c) for c in sorted(set(codes))},
        killed_at_timeout=killed,
        storage=mask_url(args.storage),
    )
    _print_table(summary, max_connections)
    if killed:
        print(f"warning: {killed} worker(s) still ran after --timeout {args.timeout:g} s: killed")
    if any(codes):
        print(f"warning: worker exit codes {summary['exit_codes']}; logs in {logs}")
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}, indent=1)
        )
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
