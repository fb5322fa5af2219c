"""The chaos driver's schedule: the disruptions (:class:`ChaosEvent`), the suite's bounded plan
and a soak round's random one, and the tiny study they are played against."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vivit_hpo.testing import tiny_base, tiny_spec

__all__ = [
    "ChaosEvent",
    "EventKind",
    "bounded_plan",
    "faults_plan",
    "random_plan",
    "tiny_spec_tree",
]

EventKind = Literal["kill", "restart", "outage", "give-up", "hang", "bad-node", "torn"]


@dataclass(frozen=True)
class ChaosEvent:
    """One disruption, ``after_s`` seconds after the previous one ended (or the start).

    - ``kill``: SIGKILL a worker of ``run`` whose trial has reported an epoch;
    - ``restart``: SIGTERM ``run``, wait for it to exit and start it again;
    - ``outage``: stop the database for ``duration_s`` seconds;
    - ``give-up``: stop the database until a worker's log says it gave up a storage call and
      waits for the database to hand its trial back (past the give-up time);
    - ``hang``: start a worker beside ``run``'s whose training hangs after its first epoch;
    - ``bad-node``: start a worker beside ``run``'s on a node where every trial raises an
      infrastructure error (no file may grow past a checkpoint's size);
    - ``torn``: freeze (SIGSTOP) a worker of ``run`` whose trial's ``last.pt`` holds an odd
      epoch >= 3, SIGKILL it, then tear that ``last.pt`` (its retry must resume from the older
      ``epochNNN.pt``).
    """

    kind: EventKind
    after_s: float = 0.0
    duration_s: float = 0.0


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


def faults_plan(*, gap_s: float = 2.0) -> list[ChaosEvent]:
    """The suite's second schedule, the faults of a node and of the storage: a node whose every
    trial raises an infrastructure error and a worker that hangs (both early, while trials are
    left to claim), a torn ``last.pt``, and an outage past the give-up time."""
    return [
        ChaosEvent("bad-node"),
        ChaosEvent("hang", gap_s),
        ChaosEvent("torn", gap_s),
        ChaosEvent("give-up", gap_s),
    ]


def random_plan(rng: random.Random, grace_s: float, *, kills: int = 3) -> list[ChaosEvent]:
    """A soak round: a bad node and a hung worker first (in either order: they need trials
    left to claim), then one outage longer than the grace period (below the soak's give-up
    time), one brief, one past the give-up time, one restart of ``run``, a torn ``last.pt`` and
    ``kills`` kills in a random order, 2 to 6 s apart."""
    nodes: list[tuple[EventKind, float]] = [("bad-node", 0.0), ("hang", 0.0)]
    rng.shuffle(nodes)
    kinds: list[tuple[EventKind, float]] = [
        ("outage", grace_s * rng.uniform(1.3, 1.6) + 2.0),
        ("outage", rng.uniform(1.0, min(5.0, grace_s / 2))),
        ("give-up", 0.0),
        ("restart", 0.0),
        ("torn", 0.0),
    ]
    kinds += [("kill", 0.0)] * kills
    rng.shuffle(kinds)
    return [ChaosEvent(k, rng.uniform(2.0, 6.0), d) for k, d in nodes + kinds]


def tiny_spec_tree(
    data_dir: Path,
    *,
    n_trials: int,
    epochs: int = 6,
    interval_s: int = 1,
    grace_s: int = 8,
    stall_s: int = 60,
    seed: int = 0,
) -> dict[str, Any]:
    """A study spec of tiny ViViTs (:func:`~vivit_hpo.testing.tiny_spec`) on the session files
    in ``data_dir``: random search without pruning, so that every trial trains its epochs, a
    full-state checkpoint every 2 epochs (a torn ``last.pt`` resumes from an older one),
    retries enough for every fault, and a ``stall_s`` far above a trial's setup (loading the
    data, building the model: no training step yet) on a loaded machine (20 s stalled every
    worker at a load of 9 on 2 cores); the driver sets the artifacts folder."""
    base = tiny_base()
    base["train"]["checkpoint_every"] = 2
    return tiny_spec(
        base={"config": base},
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
        heartbeat={
            "interval_s": interval_s,
            "grace_s": grace_s,
            "max_retry": 10,
            "max_infra_retries": 10,
            "stall_s": stall_s,
        },
    )
