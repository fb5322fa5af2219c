"""The events of a chaos run (:class:`~vivit_hpo.bench.chaos.plan.ChaosEvent`), each played
when the state it needs is observed (a trial mid-way, a trial at an odd epoch, a trial left to
claim, a worker's log line), never at a guessed moment; :func:`try_event` says whether it
could be played now."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

from optuna.trial import FrozenTrial

from vivit_hpo.bench.chaos.driver import Driver
from vivit_hpo.bench.chaos.plan import ChaosEvent
from vivit_hpo.bench.chaos.procs import is_worker, proc_stat
from vivit_hpo.bench.chaos.result import Outage, Torn
from vivit_hpo.search.record import read_epochs

__all__ = ["GAVE_UP_LINE", "try_event"]

PATIENCE_S = 60.0  # how long an event waits for the state it needs before it acts anyway
GAVE_UP_LINE = "waiting for it to hand trial"  # a worker gave a storage call up and waits
_GONE_S = 30.0  # how long a SIGKILLed worker gets to be gone
_FULL = re.compile(r"^epoch(\d+)\.pt$")


def try_event(d: Driver, ev: ChaosEvent, waited_s: float) -> bool:
    """Play ``ev`` if it can be played now; False: not yet (``waited_s`` since it was due).

    An outage waits for the node workers started so far to be up (their storage and study
    open). After :data:`PATIENCE_S` without the state an event waits for (no trial mid-way), a
    kill, a restart or an outage acts anyway; a node still needs a trial to claim, a tear a
    trial at an epoch >= 2.
    """
    relax = waited_s > PATIENCE_S
    if ev.kind in ("outage", "give-up") and d.nodes_starting() and not relax:
        return False  # a node worker still opening the storage would fail to start instead
    if ev.kind == "kill":
        return _kill(d, relax)
    if ev.kind == "restart":
        return _restart(d, relax)
    if ev.kind == "outage":
        return _outage(d, ev.duration_s, relax)
    if ev.kind == "give-up":
        return _give_up_outage(d, relax)
    if ev.kind in ("hang", "bad-node"):
        if not d.claimable():
            return False
        d.start_node(ev.kind)
        return True
    assert ev.kind == "torn", ev.kind
    return _tear(d, relax)


def _kill(d: Driver, relax: bool) -> bool:
    live = d.live_workers()
    busy = [int(t.user_attrs["pid"]) for t in d.busy()]
    pool = busy or (live if relax else [])
    if not pool:
        return False
    pid = d.rng.choice(sorted(pool))
    os.kill(pid, signal.SIGKILL)
    d.note(f"SIGKILL worker {pid}" + ("" if busy else " (no trial mid-way)"))
    d.kills += 1
    return True


def _restart(d: Driver, relax: bool) -> bool:
    assert d.main is not None
    if not d.main.alive() or not (d.busy() or relax):
        return False
    assert d.main.proc is not None
    d.note(f"SIGTERM run (pid {d.main.proc.pid})")
    d.note(f"run exited {d.main.stop()} after SIGTERM")
    d.start(d.main)
    d.restarts += 1
    return True


def _outage(d: Driver, duration_s: float, relax: bool) -> bool:
    busy = d.busy()
    if not (busy or relax):
        return False
    d.server.stop("fast")
    down = time.monotonic()
    d.note(f"PostgreSQL stopped for {duration_s:.1f} s")
    time.sleep(duration_s)
    d.server.start()
    seconds = time.monotonic() - down
    d.note(f"PostgreSQL back after {seconds:.1f} s")
    long = duration_s > d.spec.heartbeat.grace_s
    mid_way = tuple(sorted(t.number for t in busy))
    d.outages.append(Outage(duration_s, round(seconds, 2), long, len(busy), mid_way=mid_way))
    return True


def _count(paths: list[Path], text: str) -> int:
    n = 0
    for p in paths:
        with contextlib.suppress(OSError):
            n += p.read_text(errors="replace").count(text)
    return n


def _give_up_outage(d: Driver, relax: bool) -> bool:
    """Stop the database until a worker's log says it gave a storage call up and waits for the
    database to hand its trial back (:data:`GAVE_UP_LINE`), or a cap (twice the give-up time
    and two minutes) runs out; then start it again."""
    busy = d.busy()
    if not (busy or relax):
        return False
    before = _count(d.worker_logs(), GAVE_UP_LINE)
    cap = 2 * (d.give_up_s if d.give_up_s is not None else 300.0) + 120.0
    d.server.stop("fast")
    down = time.monotonic()
    d.note("PostgreSQL stopped until a worker gives up on it")
    gave_up = False
    while time.monotonic() - down < cap:
        if _count(d.worker_logs(), GAVE_UP_LINE) > before:
            gave_up = True
            break
        time.sleep(0.5)
    d.server.start()
    seconds = time.monotonic() - down
    d.note(
        f"PostgreSQL back after {seconds:.1f} s"
        + ("" if gave_up else f" (no worker gave up in {cap:.0f} s)")
    )
    long = seconds > d.spec.heartbeat.grace_s
    mid_way = tuple(sorted(t.number for t in busy))
    d.outages.append(
        Outage(0.0, round(seconds, 2), long, len(busy), True, gave_up, mid_way=mid_way)
    )
    return True


def _checkpoint_epoch(path: Path) -> int | None:
    from vivit_hpo.errors import ConfigError
    from vivit_hpo.training.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(path)["epoch"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def _frozen(pid: int) -> bool:
    """SIGSTOP ``pid`` and wait until it is stopped (its files then hold still); False: gone."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    until = time.monotonic() + _GONE_S
    while time.monotonic() < until:
        stat = proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        if stat[0] in ("T", "t"):
            return True
        time.sleep(0.01)
    return False


def _tear(d: Driver, relax: bool) -> bool:
    """Freeze (SIGSTOP) the worker of a trial mid-way whose ``last.pt`` holds an odd epoch >= 3
    (>= 2 once relaxed; any other is let go on), SIGKILL it, tear its ``last.pt`` before any
    other process may call the trial stale (the grace period), and note the epoch its retry must
    resume from: the newest ``epochNNN.pt``, an older one (full states every 2 epochs)."""
    from vivit_hpo.testing import tear

    def wanted(epoch: int) -> bool:
        return epoch >= 2 if relax else epoch >= 3 and epoch % 2 == 1

    def trained_here(t: FrozenTrial) -> bool:
        # Its own worker's records in its folder: the pid is its worker's, not one a retry
        # inherited from the trial it resumes (and the folder is its own already).
        worker = f":{t.user_attrs['pid']}"
        records = read_epochs(d.trial_folder(t.number))
        return any(r.trial == t.number and r.worker.endswith(worker) for r in records)

    pool = [t for t in d.busy() if max(t.intermediate_values) >= 2 and trained_here(t)]
    d.rng.shuffle(pool)
    for trial in pool:
        pid = int(trial.user_attrs["pid"])
        ckpt = d.trial_folder(trial.number) / "checkpoints"
        last = ckpt / "last.pt"
        if not _frozen(pid):
            continue
        epoch = _checkpoint_epoch(last) if last.is_file() else None
        fulls = [int(m.group(1)) for p in ckpt.glob("epoch*.pt") if (m := _FULL.match(p.name))]
        # The retry resumes from the newest full state that loads: frozen between an even
        # epoch's epochNNN.pt and its last.pt, that one is newer than last.pt.
        fallback = max(fulls, default=None)
        older = fallback is None or (epoch is not None and fallback < epoch)
        if epoch is None or not wanted(epoch) or not (older or relax):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            continue
        os.kill(pid, signal.SIGKILL)
        gone_by = time.monotonic() + _GONE_S
        while is_worker(pid) and time.monotonic() < gone_by:
            time.sleep(0.05)
        tear(last)
        d.note(
            f"SIGKILL worker {pid}, tore last.pt of trial {trial.number} (epoch {epoch}); "
            f"its retry resumes from epoch {fallback}"
        )
        d.torn.append(Torn(trial.number, epoch, fallback))
        return True
    return False
