"""The objective against each cost (parameters, FLOPs, throughput), with the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vivit_hpo.report.snapshot import StudySnapshot, objective
from vivit_hpo.search.record import FLOPS_PER_SAMPLE, PARAMS_COUNT, SAMPLES_PER_S, TrialRecord

__all__ = [
    "COST_ATTRS",
    "CostInfo",
    "CostPanel",
    "cost_info",
    "pareto_front",
]


def pareto_front(
    costs: Sequence[float], values: Sequence[float], *, cost_lower_better: bool, maximize: bool
) -> np.ndarray:
    """Mask of the points no other point beats on both cost and value.

    Args:
        costs: (P,) cost of each point (parameters, FLOPs, or a throughput).
        values: (P,) objective of each point.
        cost_lower_better: True for parameters/FLOPs, False for samples/s.
        maximize: the objective's direction.

    Returns:
        (P,) bool, True on the front; ties on both axes all stay on it.
    """
    c = np.asarray(costs, dtype=float) * (1.0 if cost_lower_better else -1.0)
    v = np.asarray(values, dtype=float) * (-1.0 if maximize else 1.0)
    # Both now "lower is better": a point is dominated when another is <= on both and < on one.
    le = (c[None, :] <= c[:, None]) & (v[None, :] <= v[:, None])  # (P, P) j no worse than i
    lt = (c[None, :] < c[:, None]) | (v[None, :] < v[:, None])
    return ~np.any(le & lt, axis=1)


@dataclass(frozen=True)
class CostPanel:
    """Objective against one cost attribute, with the Pareto-optimal trials marked."""

    attr: str
    label: str
    log_x: bool
    numbers: tuple[int, ...]
    costs: tuple[float, ...]
    values: tuple[float, ...]
    on_front: tuple[bool, ...]


@dataclass(frozen=True)
class CostInfo:
    panels: tuple[CostPanel, ...]


# (user attribute name, its value in a trial's record, axis label, lower is better)
COST_ATTRS: tuple[tuple[str, Callable[[TrialRecord], float | None], str, bool], ...] = (
    (PARAMS_COUNT, lambda r: r.params_count, "parameters", True),
    (FLOPS_PER_SAMPLE, lambda r: r.flops_per_sample, "training FLOPs per sample", True),
    (SAMPLES_PER_S, lambda r: r.samples_per_s, "training samples/s", False),
)


def cost_info(snap: StudySnapshot) -> CostInfo:
    """One panel per cost attribute that the complete trials recorded."""
    done = [(t, TrialRecord.of(t)) for t in snap.feasible_complete()]
    panels = []
    for attr, cost, label, lower in COST_ATTRS:
        pts = [
            (t.number, float(c), objective(t))
            for t, r in done
            if (c := cost(r)) is not None and math.isfinite(c)
        ]
        if not pts:
            continue
        numbers, costs, values = zip(*pts, strict=True)
        front = pareto_front(costs, values, cost_lower_better=lower, maximize=snap.maximize)
        positive = all(c > 0 for c in costs)
        panels.append(
            CostPanel(
                attr=attr,
                label=label,
                log_x=positive and max(costs) / min(costs) > 20,
                numbers=tuple(numbers),
                costs=tuple(costs),
                values=tuple(values),
                on_front=tuple(bool(x) for x in front),
            )
        )
    return CostInfo(panels=tuple(panels))
