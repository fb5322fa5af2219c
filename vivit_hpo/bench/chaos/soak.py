"""``vivit-hpo bench chaos``: chaos studies one after another for as long as asked."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vivit_hpo.bench.chaos.plan import random_plan, tiny_spec_tree
from vivit_hpo.bench.chaos.result import ChaosResult
from vivit_hpo.bench.chaos.runner import run_chaos

__all__ = ["SoakResult", "run_soak"]


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
            "outages_long": sum(o.long and not o.give_up for r in self.rounds for o in r.outages),
            "outages_brief": sum(not o.long for r in self.rounds for o in r.outages),
            "outages_give_up": sum(o.give_up for r in self.rounds for o in r.outages),
            "hung_workers": sum(n.kind == "hang" for r in self.rounds for n in r.nodes),
            "bad_nodes": sum(n.kind == "bad-node" for r in self.rounds for n in r.nodes),
            "torn_checkpoints": sum(len(r.torn) for r in self.rounds),
            "twins": sum(r.twin for r in self.rounds),
            "trials": sum(r.n_trials for r in self.rounds),
            "trials_lost": sum(r.lost for r in self.rounds),
            # Retries that did not resume from their predecessor's checkpoint (one deleted).
            "checkpoints_deleted": sum(r.scratch_resumes for r in self.rounds),
            # Studies left with a trial RUNNING or WAITING after every process stopped.
            "studies_unfinished": sum(
                not c.ok for r in self.rounds for c in r.checks if c.name == "final"
            ),
            "failed_checks": self.failed_checks,
            "rounds": [r.to_dict() for r in self.rounds],
        }


def run_soak(
    out: Path,
    *,
    minutes: float,
    workers: int = 4,
    seed: int = 0,
    n_trials: int = 20,
    epochs: int = 6,
    give_up_s: float = 16.0,
    stall_s: int = 120,
    on_round: Callable[[ChaosResult], None] | None = None,
) -> SoakResult:
    """Chaos studies on a private PostgreSQL server and simulated data, one after another,
    until ``minutes`` have passed (the last one finishes; each has a hard deadline). Each is
    played :func:`~vivit_hpo.bench.chaos.plan.random_plan` with a twin study (3 trials of 3
    epochs, one worker) beside it, every process giving a storage call up after ``give_up_s``
    (above the plan's outages longer than the grace period, below its give-up outage's), and
    ``stall_s`` far above a first trial's setup when the soak's processes are starved (run
    niced beside busy ones, a worker's first trial took over 60 s to its first step).

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
                data,
                n_trials=n_trials,
                epochs=epochs,
                grace_s=grace,
                stall_s=stall_s,
                seed=seed * 1000 + k,
            )
            twin = tiny_spec_tree(
                data, n_trials=3, epochs=3, grace_s=grace, stall_s=stall_s, seed=seed * 1000 - k
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
                give_up_s=give_up_s,
                twin_tree=twin,
            )
            rounds.append(result)
            soak = SoakResult(minutes, workers, seed, tuple(rounds))
            (out / "chaos.json").write_text(json.dumps(soak.to_dict(), indent=1))
            if on_round is not None:
                on_round(result)
    return SoakResult(minutes, workers, seed, tuple(rounds))
