"""The optimisation history and every trial's learning curve."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from vivit_hpo.report.snapshot import StudySnapshot, objective, trial_status

__all__ = [
    "Curve",
    "CurvesInfo",
    "HistoryInfo",
    "curves_info",
    "history_info",
]


@dataclass(frozen=True)
class HistoryInfo:
    """Objective value of each complete trial and the best value so far, by trial number."""

    numbers: tuple[int, ...]
    values: tuple[float, ...]
    best_so_far: tuple[float, ...]
    maximize: bool


def history_info(snap: StudySnapshot) -> HistoryInfo:
    """The optimisation history of ``snap``'s complete (feasible) trials."""
    done = snap.feasible_complete()
    values = [objective(t) for t in done]
    best: list[float] = []
    for v in values:
        if not best:
            best.append(v)
        else:
            best.append(max(best[-1], v) if snap.maximize else min(best[-1], v))
    return HistoryInfo(
        numbers=tuple(t.number for t in done),
        values=tuple(values),
        best_so_far=tuple(best),
        maximize=snap.maximize,
    )


@dataclass(frozen=True)
class Curve:
    """One trial's intermediate values: the best validation objective so far, per epoch."""

    number: int
    status: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class CurvesInfo:
    """Every trial's learning curve, and where the pruner stopped trials.

    ``pruned_at`` maps the last reported epoch of each pruned trial to how many trials stopped
    there (sorted by epoch).
    """

    curves: tuple[Curve, ...]
    pruned_at: dict[int, int]


def curves_info(snap: StudySnapshot) -> CurvesInfo:
    """Learning curves of every trial that reported at least one intermediate value."""
    curves = []
    pruned_at: Counter[int] = Counter()
    for t in snap.trials:
        steps = sorted(s for s, v in t.intermediate_values.items() if math.isfinite(v))
        if not steps:
            continue
        status = trial_status(t)
        curves.append(
            Curve(
                number=t.number,
                status=status,
                epochs=tuple(int(s) for s in steps),
                values=tuple(float(t.intermediate_values[s]) for s in steps),
            )
        )
        if status == "pruned":
            pruned_at[int(steps[-1])] += 1
    return CurvesInfo(curves=tuple(curves), pruned_at=dict(sorted(pruned_at.items())))
