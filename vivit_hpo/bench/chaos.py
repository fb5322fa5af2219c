"""Chaos: a study run by ``vivit-hpo run`` on a private PostgreSQL while workers are killed, the
coordinator is stopped and started again and the database goes away, then checked.

:func:`run_chaos` runs ``vivit-hpo run NAME --spec S --workers N`` (CPU) as a subprocess in a
fresh sandbox (``HOME``, ``VIVIT_HPO_HOME``, the working directory and ``TMPDIR`` inside it, the
artifacts root too) and plays a :class:`ChaosEvent` schedule against it, one event after another:

- ``kill``: SIGKILL a worker (a child process of ``run``, found in ``/proc``), preferably one
  whose trial has reported an epoch, so that its retry must resume from a checkpoint;
- ``restart``: SIGTERM ``run`` (it stops its workers, which re-enqueue their trials), wait for
  it to exit and start the same command again: it must resume the study;
- ``outage``: stop the PostgreSQL server for ``duration_s`` seconds, then start it again.

Whenever ``run`` exits before the study is done (it may give up during an outage) it is started
again. It stops when the study is done, or at the hard deadline. Then it checks
(:class:`ChaosResult`):

- ``budget``: the logical trials in a final state are exactly ``n_trials`` (a retried failure
  counts once, through its retry: :func:`~vivit_hpo.search.study.progress`);
- ``final``: no trial is left RUNNING or WAITING;
- ``no-overlap``: no logical trial had two workers training it at the same time (from the
  per-epoch records, :data:`~vivit_hpo.search.record.EPOCHS_FILE`, of every trial folder);
- ``epochs-recorded``: every epoch of a COMPLETE trial's metrics has a record;
- ``values``: every COMPLETE trial's value is its run folder's best validation BPS
  (``metrics.json``);
- ``sandbox``: nothing was written in the sandbox outside the artifacts root, and the data
  folders read by the study are unchanged;
- ``lost``: no logical trial ended FAIL (every trial interrupted by the chaos was retried).

``vivit-hpo bench chaos`` runs it as a soak, study after study, for as long as asked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.search.record import (
    FAIL_REASON,
    FAILED_TRIAL,
    EpochRecord,
    read_epochs,
    status,
)
from vivit_hpo.search.spec import StudySpec, load_spec, study_n_trials
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import (
    load_study,
    progress,
    retried_numbers,
    study_uid,
    trial_dir,
    trial_rows,
)
from vivit_hpo.testing import PostgresServer, tiny_spec
from vivit_hpo.training.run import epoch_score

__all__ = [
    "ChaosEvent",
    "ChaosResult",
    "Check",
    "Outage",
    "SoakResult",
    "bounded_plan",
    "overlapping_epochs",
    "random_plan",
    "run_chaos",
    "run_soak",
    "tiny_spec_tree",
]

EventKind = Literal["kill", "restart", "outage"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_PATIENCE_S = 60.0  # how long an event waits for a trial mid-way before it acts anyway
_STOP_WAIT_S = 200.0  # how long a SIGTERMed `run` gets to stop its workers


@dataclass(frozen=True)
class ChaosEvent:
    """One disruption, ``after_s`` seconds after the previous one ended (or the start).

    ``duration_s``: how long the database stays down (``outage`` only).
    """

    kind: EventKind
    after_s: float = 0.0
    duration_s: float = 0.0


@dataclass(frozen=True)
class Outage:
    planned_s: float
    seconds: float  # from the server stopped to the server accepting connections again
    long: bool  # longer than the heartbeat grace period
    trials_mid_way: int  # RUNNING trials with a reported epoch when the server stopped


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ChaosResult:
    """What one chaos run did and what its checks found."""

    study: str
    n_trials: int
    seconds: float
    finished: bool  # the study was done before the deadline
    kills: int
    run_restarts: int  # SIGTERM and start again, as scheduled
    run_relaunches: int  # `run` exited by itself before the study was done, started again
    run_exit_codes: tuple[int, ...]
    outages: tuple[Outage, ...]
    skipped: tuple[str, ...]  # scheduled events the study ended before
    states: dict[str, int]  # trials by state (RETRIED: a failure that a retry stands in for)
    lost: int  # logical trials that ended FAIL
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def bounded_plan(grace_s: float, *, brief_s: float = 3.0, gap_s: float = 3.0) -> list[ChaosEvent]:
    """The suite's schedule: a kill, an outage longer than the grace period, a kill, a brief
    outage, and a SIGTERM and restart of ``run`` last (stopping the workers takes a while, and
    the study must not be done before every event has landed)."""
    return [
        ChaosEvent("kill"),
        ChaosEvent("outage", gap_s, duration_s=grace_s * 1.5 + 2.0),
        ChaosEvent("kill", gap_s),
        ChaosEvent("outage", gap_s, duration_s=brief_s),
        ChaosEvent("restart", gap_s),
    ]


def random_plan(rng: random.Random, grace_s: float, *, kills: int = 3) -> list[ChaosEvent]:
    """A soak round: one long and one brief outage, one restart of ``run`` and ``kills`` kills
    in a random order, 2 to 10 s apart."""
    kinds: list[tuple[EventKind, float]] = [
        ("outage", grace_s * rng.uniform(1.3, 2.0) + 2.0),
        ("outage", rng.uniform(1.0, min(5.0, grace_s / 2))),
        ("restart", 0.0),
    ]
    kinds += [("kill", 0.0)] * kills
    rng.shuffle(kinds)
    return [ChaosEvent(k, rng.uniform(2.0, 10.0), d) for k, d in kinds]


def tiny_spec_tree(
    data_dir: Path,
    *,
    n_trials: int,
    epochs: int = 6,
    interval_s: int = 1,
    grace_s: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """A study spec of tiny ViViTs (:func:`~vivit_hpo.testing.tiny_spec`) on the session files
    in ``data_dir``: random search without pruning, so that every trial trains its epochs; the
    driver sets the artifacts folder."""
    return tiny_spec(
        description="chaos",
        data={"paths": [str(data_dir)]},
        space={
            "embed_dim": {"choices": [16, 24], "to": "model.core.embed_dim"},
            "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
        },
        epochs=epochs,
        sampler={"name": "random", "seed": seed},
        pruner={"name": "none"},
        budget={"n_trials": n_trials},
        heartbeat={"interval_s": interval_s, "grace_s": grace_s, "max_retry": 10},
    )


# -- the per-epoch record check (pure) -----------------------------------------------------------


def overlapping_epochs(
    records: Sequence[EpochRecord], root_of: dict[int, int] | None = None
) -> list[tuple[EpochRecord, EpochRecord]]:
    """Pairs of epochs of one logical trial trained by two workers at overlapping times.

    Args:
        records: the per-epoch records (of any trials, any folders; duplicates are fine).
        root_of: ``{trial number: the number of the first trial of its retry chain}``; a
            number missing from it is its own root.

    Returns:
        ``(a, b)`` with ``a.start <= b.start``, different workers, ``b.start < a.end``.
    """
    roots = root_of or {}
    chains: dict[int, list[EpochRecord]] = {}
    for r in set(records):
        chains.setdefault(roots.get(r.trial, r.trial), []).append(r)
    found = []
    for chain in chains.values():
        chain.sort(key=lambda r: (r.start, r.end))
        for i, a in enumerate(chain):
            for b in chain[i + 1 :]:
                if b.start >= a.end:
                    break
                if b.worker != a.worker:
                    found.append((a, b))
    return found


# -- processes -----------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from ``/proc/<pid>/stat``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_worker(pid: int) -> bool:
    stat = _proc_stat(pid)
    cmd = _cmdline(pid)
    return stat is not None and stat[0] != "Z" and "vivit_hpo" in cmd and "worker" in cmd


def _workers_of(pid: int) -> list[int]:
    """The live worker processes whose parent is ``pid`` (zombies left out)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] == pid and _is_worker(int(entry.name)):
            out.append(int(entry.name))
    return sorted(out)


# -- the driver ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _artifacts_env(root: Path) -> Iterator[None]:
    """Resolve trial folders as the run's processes do (``$VIVIT_HPO_ARTIFACTS`` = the root)."""
    old = os.environ.get("VIVIT_HPO_ARTIFACTS")
    os.environ["VIVIT_HPO_ARTIFACTS"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VIVIT_HPO_ARTIFACTS", None)
        else:
            os.environ["VIVIT_HPO_ARTIFACTS"] = old


def _snapshot(folders: Sequence[Path]) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


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
        pids = _workers_of(self.run.pid)
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
            if _is_worker(pid):  # an orphan of a `run` that died; never a reused pid
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
    before = _snapshot(inputs)
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
    checks, lost = _checks(d, trials, before, inputs)
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


# -- the checks ----------------------------------------------------------------------------------


def _root_of(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    return {t.number: int(t.system_attrs.get(FAILED_TRIAL, t.number)) for t in trials}


def _best_in_metrics(folder: Path) -> tuple[float | None, list[int]]:
    try:
        history = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None, []
    values = [epoch_score(h) for h in history]  # the study's objective, as the trial reports
    return (max(values) if values else None), [int(h["epoch"]) for h in history]


def _checks(
    d: _Driver,
    trials: list[FrozenTrial],
    before: dict[str, tuple[int, int]],
    inputs: list[Path],
) -> tuple[list[Check], int]:
    n_trials = study_n_trials(d.spec)
    p = progress(trials, n_trials)
    checks = [
        Check(
            "budget",
            p.finished == n_trials,
            f"{p.finished} logical trials in a final state, budget {n_trials} "
            f"({p.retried} retried failures not counted)",
        )
    ]
    unfinished = [f"#{t.number} {t.state.name}" for t in trials if not t.state.is_finished()]
    checks.append(Check("final", not unfinished, ", ".join(unfinished) or "all final"))

    uid = None
    if trials and d.storage is not None:
        uid = study_uid(load_study(d.storage, d.name))
    with _artifacts_env(d.artifacts):
        folders = {t.number: trial_dir(d.spec, d.name, t.number, uid=uid) for t in trials}
        chain_dir = trial_dir(d.spec, d.name, 0, uid=uid).parent
    # Every trial folder, not only the final ones: a worker that went on training a trial that
    # another took over writes its records into the folder it started in.
    records = [r for f in sorted(chain_dir.glob("trial-*")) for r in read_epochs(f)]
    roots = _root_of(trials)
    overlaps = overlapping_epochs(records, roots)
    detail = "; ".join(
        f"trial #{roots.get(a.trial, a.trial)}: epoch {a.epoch} by {a.worker} "
        f"[{a.start:.1f}, {a.end:.1f}] and epoch {b.epoch} by {b.worker} [{b.start:.1f}, "
        f"{b.end:.1f}]"
        for a, b in overlaps[:5]
    )
    checks.append(
        Check(
            "no-overlap",
            not overlaps,
            detail or f"{len(records)} epoch records, no two workers at once on a trial",
        )
    )

    recorded: dict[int, set[int]] = {}
    for r in records:
        recorded.setdefault(roots.get(r.trial, r.trial), set()).add(r.epoch)
    bad_values, missing = [], []
    complete = [t for t in trials if t.state == TrialState.COMPLETE and status(t) == "complete"]
    for t in complete:
        best, epochs = _best_in_metrics(folders[t.number])
        if best is None or t.value is None or not math.isclose(best, t.value, rel_tol=1e-9):
            bad_values.append(f"#{t.number}: value {t.value}, metrics.json best {best}")
        gaps = sorted(set(epochs) - recorded.get(roots[t.number], set()))
        if gaps:
            missing.append(f"#{t.number}: epochs {gaps}")
    checks.append(
        Check(
            "epochs-recorded",
            not missing,
            "; ".join(missing) or f"every epoch of {len(complete)} complete trials recorded",
        )
    )
    checks.append(
        Check(
            "values",
            not bad_values,
            "; ".join(bad_values) or f"{len(complete)} complete values = their metrics.json",
        )
    )

    # Every file of the sandbox outside the artifacts root is a write outside it (the sandbox
    # starts empty and holds the run's home, working directory and TMPDIR). Empty folders are
    # named but pass: libraries make them on import (torch's ``$TMPDIR/torchinductor_<user>``).
    outside = [p for p in sorted(d.sandbox.rglob("*")) if not p.is_relative_to(d.artifacts)]
    files = [str(p.relative_to(d.sandbox)) for p in outside if not p.is_dir()]
    empty = [
        str(p.relative_to(d.sandbox))
        for p in outside
        if p.is_dir() and p.parent != d.sandbox and not any(p.iterdir())
    ]
    after = _snapshot(inputs)
    changed = sorted({path for path, _ in set(before.items()) ^ set(after.items())})
    bad = files + [f"input changed: {path}" for path in changed]
    detail = "; ".join(bad[:10]) or "no file outside the artifacts root; inputs unchanged"
    if empty:
        detail += f" (empty folders: {', '.join(empty[:5])})"
    checks.append(Check("sandbox", not bad, detail))

    retried = retried_numbers(trials)
    lost = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    why = "; ".join(
        f"#{t.number}: {t.user_attrs.get(FAIL_REASON) or 'no heartbeat, out of retries'}"
        for t in lost
    )
    checks.append(Check("lost", not lost, why or "0 trials lost"))
    return checks, len(lost)


# -- the soak ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakResult:
    """Chaos studies run one after another for ``minutes``."""

    minutes: float
    workers: int
    seed: int
    rounds: tuple[ChaosResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.rounds) and all(r.ok for r in self.rounds)

    @property
    def failed_checks(self) -> dict[str, int]:
        """``{check name: rounds it failed in}``."""
        c = Counter(ch.name for r in self.rounds for ch in r.checks if not ch.ok)
        return dict(sorted(c.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "workers": self.workers,
            "seed": self.seed,
            "ok": self.ok,
            "kills": sum(r.kills for r in self.rounds),
            "run_restarts": sum(r.run_restarts for r in self.rounds),
            "run_relaunches": sum(r.run_relaunches for r in self.rounds),
            "outages_long": sum(o.long for r in self.rounds for o in r.outages),
            "outages_brief": sum(not o.long for r in self.rounds for o in r.outages),
            "trials": sum(r.n_trials for r in self.rounds),
            "trials_lost": sum(r.lost for r in self.rounds),
            "failed_checks": self.failed_checks,
            "rounds": [r.to_dict() for r in self.rounds],
        }


def run_soak(
    out: Path,
    *,
    minutes: float,
    workers: int = 4,
    seed: int = 0,
    n_trials: int = 12,
    epochs: int = 6,
    on_round: Callable[[ChaosResult], None] | None = None,
) -> SoakResult:
    """Chaos studies on a private PostgreSQL server and simulated data, one after another,
    until ``minutes`` have passed (the last one finishes; each has a hard deadline).

    Writes ``out/chaos.json`` after every study (``out/data``: the sessions; ``out/round-<k>``:
    each study's spec, logs and sandbox).
    """
    from vivit_hpo.data import synthesize
    from vivit_hpo.testing import postgres_server

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "oracle.json").is_file():
        synthesize(
            data, sessions=2, neurons=[12, 9], frames=3000, size=(16, 16), frame_rate=60.0, seed=1
        )
    rng = random.Random(seed)
    grace = 8
    end = time.monotonic() + minutes * 60
    rounds: list[ChaosResult] = []
    with postgres_server() as server:
        while not rounds or time.monotonic() < end:
            k = len(rounds) + 1
            work = out / f"round-{k}"
            if work.exists():
                raise FileExistsError(f"{work} exists: pass a new --out folder")
            tree = tiny_spec_tree(
                data, n_trials=n_trials, epochs=epochs, grace_s=grace, seed=seed * 1000 + k
            )
            result = run_chaos(
                server,
                tree,
                name=f"chaos-{seed}-{k}",
                work=work,
                workers=workers,
                plan=random_plan(rng, grace),
                deadline_s=max(600.0, end - time.monotonic() + 300.0),
                seed=rng.randrange(2**31),
            )
            rounds.append(result)
            soak = SoakResult(minutes, workers, seed, tuple(rounds))
            (out / "chaos.json").write_text(json.dumps(soak.to_dict(), indent=1))
            if on_round is not None:
                on_round(result)
    return SoakResult(minutes, workers, seed, tuple(rounds))
