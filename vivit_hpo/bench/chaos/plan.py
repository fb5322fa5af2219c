"""The chaos driver's schedule: the disruptions (:class:`ChaosEvent`), the suite's bounded plan
and a soak round's random one, and the tiny study they are played against."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vivit_hpo.testing import tiny_spec

__all__ = ["ChaosEvent", "EventKind", "bounded_plan", "random_plan", "tiny_spec_tree"]

EventKind = Literal["kill", "restart", "outage"]


@dataclass(frozen=True)
class ChaosEvent:
    """One disruption, ``after_s`` seconds after the previous one ended (or the start).

    ``duration_s``: how long the database stays down (``outage`` only).
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
