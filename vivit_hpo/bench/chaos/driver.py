"""The chaos driver's state: ``vivit-hpo run`` as a subprocess in a sandbox (:class:`RunProcess`;
and its twin's, a study of the same name in another storage on the same artifacts root), the
workers it starts beside them on faulty nodes, and the study as the database shows it
(:class:`Driver`). :mod:`.events` plays the events on it, :mod:`.runner` runs the whole."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.bench.chaos.procs import is_worker, workers_of
from vivit_hpo.bench.chaos.result import Node, NodeKind, Outage, Torn
from vivit_hpo.bench.chaos.sandbox import artifacts_env
from vivit_hpo.search.spec import StudySpec, study_n_trials
from vivit_hpo.search.storage import ENV_MAX_WAIT, open_storage
from vivit_hpo.search.study import load_study, logs_dir, progress, study_uid, trial_dir
from vivit_hpo.testing import PostgresServer

__all__ = ["STARTED_LINE", "Driver", "RunProcess"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_STOP_WAIT_S = 200.0  # how long a SIGTERMed `run` gets to stop its workers
STARTED_LINE = "worker for study"  # a worker opened the storage and the study (search.worker)


@dataclass
class RunProcess:
    """One ``vivit-hpo run NAME --spec S --workers N`` of the chaos run (the study's, or its
    twin's), started again whenever asked; its output in ``<work>/<label>-<k>.log``."""

    label: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    work: Path
    proc: subprocess.Popen[bytes] | None = None
    launches: int = 0
    exit_codes: list[int] = field(default_factory=list)
    seen_workers: set[int] = field(default_factory=set)

    def start(self) -> None:
        self.launches += 1
        log = open(self.work / f"{self.label}-{self.launches}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        log.close()  # the child's now

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> list[int]:
        """Its live worker processes (remembered, so that orphans can be found later)."""
        if not self.alive():
            return []
        assert self.proc is not None
        pids = workers_of(self.proc.pid)
        self.seen_workers.update(pids)
        return pids

    def stop(self) -> int:
        """SIGTERM it (it stops its workers, which hand their trials back) and wait; SIGKILL it
        if it has not exited in time. Returns its exit code."""
        assert self.proc is not None
        self.workers()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.exit_codes.append(code)
        return code


@dataclass
class _NodeProcess:
    kind: NodeKind
    proc: subprocess.Popen[bytes]
    log: Path
    reaped: bool = False


@dataclass
class Driver:
    """The state of one chaos run: its processes, the study as the database shows it, and what
    the events did (read by :mod:`.checks` and :mod:`.faults_checks`)."""

    server: PostgresServer
    name: str
    spec: StudySpec
    work: Path
    sandbox: Path
    artifacts: Path
    rng: random.Random
    give_up_s: float | None = None  # the storage calls' give-up time in every process
    main: RunProcess | None = None
    twin: RunProcess | None = None
    twin_url: str | None = None
    twin_spec: StudySpec | None = None
    log: list[str] = field(default_factory=list)
    storage: optuna.storages.RDBStorage | None = None
    kills: int = 0
    restarts: int = 0
    relaunches: int = 0
    outages: list[Outage] = field(default_factory=list)
    torn: list[Torn] = field(default_factory=list)
    node_procs: list[_NodeProcess] = field(default_factory=list)
    twin_finished: bool = False
    _uid: str | None = None

    def env(self, storage_url: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        home = self.sandbox / "home"
        env.update(
            HOME=str(home),
            VIVIT_HPO_HOME=str(home),
            TMPDIR=str(self.sandbox / "tmp"),
            VIVIT_HPO_STORAGE=storage_url or self.server.url(),
            VIVIT_HPO_ARTIFACTS=str(self.artifacts),
            PYTHONDONTWRITEBYTECODE="1",  # nothing into the package's folders
        )
        if self.give_up_s is not None:
            env[ENV_MAX_WAIT] = f"{self.give_up_s:g}"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p
        )
        env.pop("OMP_NUM_THREADS", None)  # `run` gives each worker its share of the cores
        return env

    def run_process(self, label: str, spec_path: Path, workers: int, url: str) -> RunProcess:
        cmd = [sys.executable, "-m", "vivit_hpo", "run", self.name, "--spec", str(spec_path)]
        return RunProcess(
            label,
            [*cmd, "--workers", str(workers)],
            self.env(url),
            self.sandbox / "home",
            self.work,
        )

    def start(self, run: RunProcess) -> None:
        run.start()
        assert run.proc is not None
        self.note(f"started {run.label} #{run.launches} (pid {run.proc.pid})")

    def live_workers(self) -> list[int]:
        """The live workers of the study's ``run``."""
        return self.main.workers() if self.main is not None else []

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

    def uid(self) -> str | None:
        """The study's uid (its trial folders' and logs' key), once the study exists."""
        if self._uid is None and self.trials() is not None:
            assert self.storage is not None
            with contextlib.suppress(Exception):  # the database went down meanwhile
                self._uid = study_uid(load_study(self.storage, self.name))
        return self._uid

    def done(self) -> bool:
        trials = self.trials()
        return trials is not None and progress(trials, study_n_trials(self.spec)).done

    def busy(self) -> list[FrozenTrial]:
        """RUNNING trials that have reported an epoch, by a live worker of ``run``."""
        live = set(self.live_workers())
        return [
            t
            for t in self.trials() or []
            if t.state == TrialState.RUNNING
            and t.intermediate_values
            and int(t.user_attrs.get("pid", -1)) in live
        ]

    def claimable(self) -> bool:
        """Whether a worker that joins now gets a trial (one waiting, or budget left)."""
        trials = self.trials()
        if trials is None:
            return False
        p = progress(trials, study_n_trials(self.spec))
        return p.waiting > 0 or p.logical < study_n_trials(self.spec)

    def trial_folder(self, number: int) -> Path:
        with artifacts_env(self.artifacts):
            return trial_dir(self.spec, self.name, number, uid=self.uid())

    def worker_logs(self) -> list[Path]:
        """The logs of ``run``'s workers (``logs-<uid>/worker-<i>.log``) and of the nodes."""
        uid = self.uid()
        out = [n.log for n in self.node_procs]
        if uid is not None:
            with artifacts_env(self.artifacts):
                out += sorted(logs_dir(self.spec, self.name, uid).glob("worker-*.log"))
        return out

    # -- the nodes beside `run` ------------------------------------------------------------

    def start_node(self, kind: NodeKind) -> None:
        """A ``vivit-hpo worker`` of the study beside ``run``'s, on a node of ``kind``."""
        from vivit_hpo.testing import file_size_limit, hang_env

        env = {**self.env(), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "vivit_hpo", "worker", self.name, "--device", "cpu"]
        preexec = None
        if kind == "hang":
            env = hang_env("wait", env)
        else:
            # Below a tiny model's smallest checkpoint (45 KB), above the node's own log.
            preexec = file_size_limit(40 * 2**10)
            cmd += ["--max-infra-errors", "2"]
        log = self.work / f"{kind}-{len(self.node_procs) + 1}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.sandbox / "home",
                preexec_fn=preexec,
            )
        self.node_procs.append(_NodeProcess(kind, proc, log))
        self.note(f"started a {kind} worker (pid {proc.pid})")

    def nodes_starting(self) -> bool:
        """Whether a node worker is still starting: running, and its log has no line yet that
        it opened the storage and the study (:data:`STARTED_LINE`). An outage then would stop
        it before it is the node it stands for."""
        for n in self.node_procs:
            if n.proc.poll() is not None:
                continue
            try:
                text = n.log.read_text(errors="replace")
            except OSError:
                text = ""
            if STARTED_LINE not in text:
                return True
        return False

    def reap_nodes(self) -> None:
        """Note each node worker's exit once."""
        for n in self.node_procs:
            if n.proc.poll() is not None and not n.reaped:
                n.reaped = True
                self.note(f"the {n.kind} worker {n.proc.pid} exited {n.proc.returncode}")

    def nodes(self) -> list[Node]:
        host = socket.gethostname()
        return [
            Node(n.kind, f"{host}:{n.proc.pid}", n.proc.poll(), str(n.log)) for n in self.node_procs
        ]

    # -- the twin ---------------------------------------------------------------------------

    def twin_done(self) -> bool:
        """Whether the twin's study is done (read from its database until it is)."""
        if self.twin_finished or self.twin_url is None or self.twin_spec is None:
            return self.twin_finished
        try:
            storage = open_storage(self.twin_url)
            try:
                trials = storage.get_all_trials(storage.get_study_id_from_name(self.name))
            finally:
                storage.engine.dispose()
        except Exception:
            return False
        self.twin_finished = progress(trials, study_n_trials(self.twin_spec)).done
        return self.twin_finished

    def supervise_twin(self) -> None:
        """Start the twin's ``run`` again when it exited before its study was done."""
        if self.twin is None:
            return
        self.twin.workers()
        if self.twin.alive() or self.twin_finished:
            return
        assert self.twin.proc is not None
        code = self.twin.proc.returncode
        self.twin.exit_codes.append(code)
        if self.twin_done():
            self.note(f"twin exited {code}, its study done")
        else:
            self.note(f"twin exited {code}; started again")
            time.sleep(2.0)  # the database may be starting up
            self.start(self.twin)

    # -- the end ----------------------------------------------------------------------------

    def stop_everything(self) -> None:
        for run in (self.main, self.twin):
            if run is not None and run.alive():
                self.note(f"{run.label} exited {run.stop()} after SIGTERM")
        for n in self.node_procs:
            if n.proc.poll() is None:
                self.note(f"SIGKILL the {n.kind} worker {n.proc.pid}, still running")
                n.proc.kill()
                n.proc.wait()
        for run in (self.main, self.twin):
            for pid in sorted(run.seen_workers if run is not None else ()):
                if is_worker(pid):  # an orphan of a `run` that died; never a reused pid
                    self.note(f"SIGKILL orphaned worker {pid}")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if not self.server.running:
            self.server.start()
