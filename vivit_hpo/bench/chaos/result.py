"""What a chaos run did and what its checks found."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ChaosResult", "Check", "Outage"]


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
