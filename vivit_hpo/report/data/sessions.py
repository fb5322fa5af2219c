"""Validation BPS per session of the top trials, beside the oracle where known."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vivit_hpo.report.snapshot import StudySnapshot, objective
from vivit_hpo.search.record import TrialRecord

__all__ = [
    "SessionsInfo",
    "sessions_info",
]


@dataclass(frozen=True)
class SessionsInfo:
    """Validation BPS per session of the top trials, and the oracle where known.

    ``bps[i][j]`` is trial ``numbers[i]`` on session ``sessions[j]`` (NaN where not recorded).
    """

    sessions: tuple[str, ...]
    numbers: tuple[int, ...]
    bps: tuple[tuple[float, ...], ...]
    oracle: tuple[float | None, ...]


def sessions_info(snap: StudySnapshot, top: int = 5) -> SessionsInfo:
    """Per-session validation BPS (``val_bps_per_session``) of the ``top`` best complete trials."""
    done = snap.feasible_complete()
    ranked = sorted(done, key=objective, reverse=snap.maximize)
    records = [TrialRecord.of(t) for t in ranked]
    chosen = [(r.number, per) for r in records if (per := r.val_bps_per_session) is not None][:top]
    oracle = snap.oracle_per_session()
    sessions = sorted({s for _, per in chosen for s in per} | set(oracle))
    rows = [tuple(per.get(s, math.nan) for s in sessions) for _, per in chosen]
    return SessionsInfo(
        sessions=tuple(sessions),
        numbers=tuple(n for n, _ in chosen),
        bps=tuple(rows),
        oracle=tuple(oracle.get(s) for s in sessions),
    )
