"""What a chaos run did and what its checks found."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["ChaosResult", "Check", "Node", "Outage", "Torn"]

NodeKind = Literal["hang", "bad-node"]


@dataclass(frozen=True)
class Outage:
    planned_s: float  # 0 for an outage held until a worker gave a storage call up
    seconds: float  # from the server stopped to the server accepting connections again
    long: bool  # longer than the heartbeat grace period
    trials_mid_way: int  # RUNNING trials with a reported epoch when the server stopped
    give_up: bool = False  # held until a worker gave up on the database and waited for it
    gave_up: bool = False  # (give_up only) a worker's log said so before the cap ran out
    mid_way: tuple[int, ...] = ()  # the numbers of those trials


@dataclass(frozen=True)
class Node:
    """A worker the driver started on a node of its own making, beside ``run``'s: ``hang`` (its
    training hangs after its first epoch) or ``bad-node`` (every checkpoint write fails with
    EFBIG, an infrastructure error)."""

    kind: NodeKind
    worker: str  # host:pid, as its trials record it
    exit_code: int | None  # None: still running when the driver stopped it
    log: str


@dataclass(frozen=True)
class Torn:
    """A trial whose worker was SIGKILLed at an epoch, then whose ``last.pt`` was torn."""

    trial: int
    last_epoch: int  # the epoch in last.pt before it was torn
    fallback_epoch: int | None  # the newest epochNNN.pt: where its retry must resume from


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
    nodes: tuple[Node, ...] = ()
    torn: tuple[Torn, ...] = ()
    twin: bool = False  # a study of the same name in another storage shared the artifacts root
    scratch_resumes: int = 0  # retries that did not resume from their predecessor's checkpoint

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}
