"""One chaos run (:func:`run_chaos`): the study's ``run`` (and its twin's) started in a fresh
sandbox, the plan's events played one after another, then every check."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
import yaml

from vivit_hpo.bench.chaos.checks import study_checks
from vivit_hpo.bench.chaos.driver import Driver
from vivit_hpo.bench.chaos.events import try_event
from vivit_hpo.bench.chaos.faults_checks import fault_checks
from vivit_hpo.bench.chaos.plan import ChaosEvent
from vivit_hpo.bench.chaos.result import ChaosResult
from vivit_hpo.bench.chaos.sandbox import snapshot
from vivit_hpo.search.spec import StudySpec, load_spec, study_n_trials
from vivit_hpo.search.study import trial_rows
from vivit_hpo.testing import PostgresServer

__all__ = ["run_chaos"]


def _twin_database(server: PostgresServer, name: str) -> str:
    """A fresh database on ``server`` for the twin study; its URL."""
    db = "twin_" + re.sub(r"\W", "_", name)
    engine = sqlalchemy.create_engine(
        server.url().replace("postgresql://", "postgresql+psycopg2://"),
        isolation_level="AUTOCOMMIT",
        poolclass=sqlalchemy.pool.NullPool,
    )
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{db}"'))
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{db}"'))
    finally:
        engine.dispose()
    return server.url(db)


def _write_spec(path: Path, tree: dict[str, Any], artifacts: Path) -> StudySpec:
    tree = {**tree, "artifacts": {**tree.get("artifacts", {}), "dir": str(artifacts)}}
    path.write_text(yaml.safe_dump(tree))
    return load_spec(path)


def run_chaos(
    server: PostgresServer,
    spec_tree: dict[str, Any],
    *,
    name: str,
    work: Path,
    workers: int = 4,
    plan: Sequence[ChaosEvent],
    deadline_s: float = 600.0,
    seed: int = 0,
    give_up_s: float | None = None,
    twin_tree: dict[str, Any] | None = None,
) -> ChaosResult:
    """Run study ``name`` with ``vivit-hpo run`` under ``plan``'s disruptions and check it.

    Args:
        server: the private PostgreSQL server the study lives on; the driver stops and starts
            it (never the machine's shared one).
        spec_tree: the study spec (a mapping, as in a spec YAML); its artifacts folder is
            replaced by the sandbox's.
        name: the study (must not exist yet).
        work: an empty or missing folder: ``spec.yaml``, ``run-<k>.log``, ``result.json`` and
            ``sandbox/`` (the run's home, working directory, temporary folder, artifacts root).
        workers: CPU workers of ``run``.
        plan: the events, played in order (see :class:`ChaosEvent`).
        deadline_s: the hard limit on the whole run; past it, ``run`` is stopped and the checks
            say what was left.
        seed: which worker each kill picks.
        give_up_s: every process's storage give-up time (``$VIVIT_HPO_STORAGE_MAX_WAIT_S``);
            None: the environment's. A ``give-up`` outage lasts about twice as long.
        twin_tree: the spec of a twin: a study of the same name in another database of
            ``server``, run alongside by a ``run`` with one worker on the same artifacts root
            (checked: neither touches the other's files); None: no twin.

    Returns:
        The events played and the checks' verdicts.
    """
    t0 = time.monotonic()
    work = work.resolve()
    sandbox = work / "sandbox"
    artifacts = sandbox / "artifacts"
    for folder in (sandbox / "home", sandbox / "tmp", artifacts):
        folder.mkdir(parents=True, exist_ok=False)
    spec_path = work / "spec.yaml"
    spec = _write_spec(spec_path, spec_tree, artifacts)
    inputs = [Path(p) for p in spec.data.paths or []]
    before = snapshot(inputs)
    d = Driver(server, name, spec, work, sandbox, artifacts, random.Random(seed), give_up_s)
    d.main = d.run_process("run", spec_path, workers, server.url())
    if twin_tree is not None:
        d.twin_url = _twin_database(server, name)
        d.twin_spec = _write_spec(work / "twin-spec.yaml", twin_tree, artifacts)
        d.twin = d.run_process("twin", work / "twin-spec.yaml", 1, d.twin_url)
    deadline = t0 + deadline_s
    pending = list(plan)
    due = time.monotonic() + (pending[0].after_s if pending else 0.0)
    finished = False
    for run in (d.main, d.twin):
        if run is not None:
            d.start(run)
    try:
        while time.monotonic() < deadline:
            d.live_workers()
            d.supervise_twin()
            d.reap_nodes()
            if not d.main.alive():
                assert d.main.proc is not None
                d.main.exit_codes.append(d.main.proc.returncode)
                d.note(f"run exited {d.main.proc.returncode}")
                if d.done():
                    finished = _wait_for_twin(d, deadline)
                    break
                d.relaunches += 1
                time.sleep(2.0)  # the database may be starting up
                d.start(d.main)
                continue
            now = time.monotonic()
            if pending and now >= due and try_event(d, pending[0], now - due):
                pending.pop(0)
                due = time.monotonic() + (pending[0].after_s if pending else 0.0)
                continue
            time.sleep(0.5)
        else:
            d.note(f"deadline of {deadline_s:.0f} s reached")
    finally:
        d.stop_everything()
    trials = d.trials() or []
    checks, lost = study_checks(d, trials, before, inputs)
    more, scratch = fault_checks(d, trials)
    if d.storage is not None:
        d.storage.engine.dispose()
    states = Counter(r.state for r in trial_rows(trials))
    result = ChaosResult(
        study=name,
        n_trials=study_n_trials(spec),
        seconds=round(time.monotonic() - t0, 1),
        finished=finished,
        kills=d.kills,
        run_restarts=d.restarts,
        run_relaunches=d.relaunches,
        run_exit_codes=tuple(d.main.exit_codes),
        outages=tuple(d.outages),
        skipped=tuple(ev.kind for ev in pending),
        states=dict(sorted(states.items())),
        lost=lost,
        checks=(*checks, *more),
        notes=tuple(d.log),
        nodes=tuple(d.nodes()),
        torn=tuple(d.torn),
        twin=d.twin is not None,
        scratch_resumes=scratch,
    )
    (work / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


def _wait_for_twin(d: Driver, deadline: float) -> bool:
    """After the study is done: wait for the twin's ``run`` to finish its study too. Returns
    whether it did before the deadline (True without a twin)."""
    while d.twin is not None and not d.twin_finished and time.monotonic() < deadline:
        d.supervise_twin()
        time.sleep(0.5)
    if d.twin is not None and not d.twin_finished:
        d.note("deadline reached before the twin's study was done")
    return d.twin is None or d.twin_finished
