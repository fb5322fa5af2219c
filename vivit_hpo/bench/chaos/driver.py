"""The chaos driver: ``vivit-hpo run`` as a subprocess in a sandbox, the events played against
it one after another, and the checks run on what it left (:func:`run_chaos`)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.bench.chaos.checks import study_checks
from vivit_hpo.bench.chaos.plan import ChaosEvent
from vivit_hpo.bench.chaos.procs import is_worker, workers_of
from vivit_hpo.bench.chaos.result import ChaosResult, Outage
from vivit_hpo.bench.chaos.sandbox import snapshot
from vivit_hpo.search.spec import StudySpec, load_spec, study_n_trials
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import progress, trial_rows
from vivit_hpo.testing import PostgresServer

__all__ = ["run_chaos"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_PATIENCE_S = 60.0  # how long an event waits for a trial mid-way before it acts anyway
_STOP_WAIT_S = 200.0  # how long a SIGTERMed `run` gets to stop its workers


@dataclass
class _Driver:
    server: PostgresServer
    name: str
    spec: StudySpec
    spec_path: Path
    workers: int
    work: Path
    sandbox: Path
    artifacts: Path
    rng: random.Random
    log: list[str] = field(default_factory=list)
    run: subprocess.Popen[bytes] | None = None
    launches: int = 0
    exit_codes: list[int] = field(default_factory=list)
    seen_workers: set[int] = field(default_factory=set)
    storage: optuna.storages.RDBStorage | None = None

    # -- the run process --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        home = self.sandbox / "home"
        env.update(
            HOME=str(home),
            VIVIT_HPO_HOME=str(home),
            TMPDIR=str(self.sandbox / "tmp"),
            VIVIT_HPO_STORAGE=self.server.url(),
            VIVIT_HPO_ARTIFACTS=str(self.artifacts),
            PYTHONDONTWRITEBYTECODE="1",  # nothing into the package's folders
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p
        )
        env.pop("OMP_NUM_THREADS", None)  # `run` gives each worker its share of the cores
        return env

    def start_run(self) -> None:
        self.launches += 1
        log = open(self.work / f"run-{self.launches}.log", "wb")  # noqa: SIM115 - the child's
        cmd = [sys.executable, "-m", "vivit_hpo", "run", self.name, "--spec", str(self.spec_path)]
        self.run = subprocess.Popen(
            [*cmd, "--workers", str(self.workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.sandbox / "home",
        )
        log.close()
        self.note(f"started run #{self.launches} (pid {self.run.pid})")

    def run_alive(self) -> bool:
        return self.run is not None and self.run.poll() is None

    def live_workers(self) -> list[int]:
        if not self.run_alive():
            return []
        assert self.run is not None
        pids = workers_of(self.run.pid)
        self.seen_workers.update(pids)
        return pids

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    # -- the study, as far as the database is up -------------------------------------------

    def trials(self) -> list[FrozenTrial] | None:
        """The study's trials, or None (database down, study not created yet)."""
        try:
            if self.storage is None:
                self.storage = open_storage(self.server.url())
            study_id = self.storage.get_study_id_from_name(self.name)
            return self.storage.get_all_trials(study_id, deepcopy=False)
        except Exception:
            return None

    def done(self) -> bool:
        trials = self.trials()
        return trials is not None and progress(trials, study_n_trials(self.spec)).done

    def busy_pids(self) -> list[int]:
        """Pids of workers whose RUNNING trial has reported at least one epoch."""
        trials = self.trials() or []
        return sorted(
            int(t.user_attrs["pid"])
            for t in trials
            if t.state == TrialState.RUNNING and t.intermediate_values and "pid" in t.user_attrs
        )

    # -- the events -------------------------------------------------------------------------

    def try_event(self, ev: ChaosEvent, waited_s: float) -> Outage | bool:
        """Play ``ev`` if it can be played now; False: not yet (``waited_s`` since it was due)."""
        relax = waited_s > _PATIENCE_S  # no trial mid-way for a while: act anyway
        if ev.kind == "kill":
            live = self.live_workers()
            busy = [p for p in self.busy_pids() if p in live]
            pool = busy or (live if relax else [])
            if not pool:
                return False
            pid = self.rng.choice(pool)
            os.kill(pid, signal.SIGKILL)
            self.note(f"SIGKILL worker {pid}" + ("" if busy else " (no trial mid-way)"))
            return True
        if ev.kind == "restart":
            if not self.run_alive() or not (self.busy_pids() or relax):
                return False
            assert self.run is not None
            self.live_workers()
            self.run.send_signal(signal.SIGTERM)
            self.note(f"SIGTERM run (pid {self.run.pid})")
            try:
                code = self.run.wait(timeout=_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.note("run did not stop in time: SIGKILL")
                self.run.kill()
                code = self.run.wait()
            self.exit_codes.append(code)
            self.note(f"run exited {code} after SIGTERM")
            self.start_run()
            return True
        busy = self.busy_pids()
        if not (busy or relax):
            return False
        self.live_workers()
        self.server.stop("fast")
        down = time.monotonic()
        self.note(f"PostgreSQL stopped for {ev.duration_s:.1f} s")
        time.sleep(ev.duration_s)
        self.server.start()
        seconds = time.monotonic() - down
        self.note(f"PostgreSQL back after {seconds:.1f} s")
        long = ev.duration_s > self.spec.heartbeat.grace_s
        return Outage(ev.duration_s, round(seconds, 2), long, trials_mid_way=len(busy))

    def stop_everything(self) -> None:
        if self.run_alive():
            assert self.run is not None
            self.live_workers()
            self.run.send_signal(signal.SIGTERM)
            try:
                self.exit_codes.append(self.run.wait(timeout=_STOP_WAIT_S))
            except subprocess.TimeoutExpired:
                self.run.kill()
                self.exit_codes.append(self.run.wait())
        for pid in sorted(self.seen_workers):
            if is_worker(pid):  # an orphan of a `run` that died; never a reused pid
                self.note(f"SIGKILL orphaned worker {pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not self.server.running:
            self.server.start()


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

    Returns:
        The events played and the checks' verdicts.
    """
    t0 = time.monotonic()
    work = work.resolve()
    sandbox = work / "sandbox"
    artifacts = sandbox / "artifacts"
    for folder in (sandbox / "home", sandbox / "tmp", artifacts):
        folder.mkdir(parents=True, exist_ok=False)
    tree = {**spec_tree, "artifacts": {**spec_tree.get("artifacts", {}), "dir": str(artifacts)}}
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tree))
    spec = load_spec(spec_path)
    inputs = [Path(p) for p in spec.data.paths or []]
    before = snapshot(inputs)
    d = _Driver(
        server, name, spec, spec_path, workers, work, sandbox, artifacts, random.Random(seed)
    )
    deadline = t0 + deadline_s
    kills = restarts = relaunches = 0
    outages: list[Outage] = []
    pending = list(plan)
    due = time.monotonic() + (pending[0].after_s if pending else 0.0)
    finished = False
    d.start_run()
    try:
        while time.monotonic() < deadline:
            d.live_workers()
            if not d.run_alive():
                assert d.run is not None
                d.exit_codes.append(d.run.returncode)
                d.note(f"run exited {d.run.returncode}")
                if d.done():
                    finished = True
                    break
                relaunches += 1
                time.sleep(2.0)  # the database may be starting up
                d.start_run()
                continue
            now = time.monotonic()
            if pending and now >= due:
                got = d.try_event(pending[0], now - due)
                if got is not False:
                    ev = pending.pop(0)
                    if ev.kind == "kill":
                        kills += 1
                    elif ev.kind == "restart":
                        restarts += 1
                    elif isinstance(got, Outage):
                        outages.append(got)
                    due = time.monotonic() + (pending[0].after_s if pending else 0.0)
                    continue
            time.sleep(0.5)
        else:
            d.note(f"deadline of {deadline_s:.0f} s reached")
    finally:
        d.stop_everything()
    trials = d.trials() or []
    checks, lost = study_checks(d, trials, before, inputs)
    if d.storage is not None:
        d.storage.engine.dispose()
    states = Counter(r.state for r in trial_rows(trials))
    result = ChaosResult(
        study=name,
        n_trials=study_n_trials(spec),
        seconds=round(time.monotonic() - t0, 1),
        finished=finished,
        kills=kills,
        run_restarts=restarts,
        run_relaunches=relaunches,
        run_exit_codes=tuple(d.exit_codes),
        outages=tuple(outages),
        skipped=tuple(ev.kind for ev in pending),
        states=dict(sorted(states.items())),
        lost=lost,
        checks=tuple(checks),
        notes=tuple(d.log),
    )
    (work / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result
