"""Parallel coordinates over the complete trials' parameters (or search-space values) and
objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from vivit_hpo.report.data._spec import spec_space
from vivit_hpo.report.snapshot import StudySnapshot, objective
from vivit_hpo.search.record import TrialRecord

__all__ = [
    "ParallelDim",
    "ParallelInfo",
    "parallel_info",
]


@dataclass(frozen=True)
class ParallelDim:
    """One axis of the parallel-coordinates plot.

    ``values`` are numbers to plot (category indices for categorical parameters, log10 for
    log-scaled ones); ``ticktext`` labels ``tickvals`` when they are not the plain numbers.
    """

    label: str
    values: tuple[float, ...]
    tickvals: tuple[float, ...] | None = None
    ticktext: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ParallelInfo:
    """Axes for the complete trials (the objective last) and the parameters left out."""

    dims: tuple[ParallelDim, ...]
    objective: ParallelDim | None
    numbers: tuple[int, ...]
    omitted: tuple[str, ...]  # conditional (absent in some trials) or fixed parameters


def _category_dim(label: str, raw: Sequence[Any], choices: Sequence[Any]) -> ParallelDim:
    # Categories in the given order, values that compare across trials as their text.
    def key(v: Any) -> str:
        return v if isinstance(v, str) else repr(v)

    order = [key(c) for c in choices]
    order += sorted({key(v) for v in raw} - set(order))
    index = {c: i for i, c in enumerate(order)}
    return ParallelDim(
        label=label,
        values=tuple(float(index[key(v)]) for v in raw),
        tickvals=tuple(float(i) for i in range(len(order))),
        ticktext=tuple(order),
    )


def _log_dim(label: str, raw: Sequence[Any], low: float, high: float) -> ParallelDim:
    lo, hi = math.log10(low), math.log10(high)
    ticks = [float(x) for x in range(math.floor(lo), math.ceil(hi) + 1)]
    return ParallelDim(
        label=f"{label} (log10)",
        values=tuple(math.log10(float(v)) for v in raw),
        tickvals=tuple(ticks),
        ticktext=tuple(f"1e{int(x)}" for x in ticks),
    )


def _param_dim(name: str, trials: Sequence[FrozenTrial]) -> ParallelDim:
    """An axis for Optuna parameter ``name``, shaped by its distribution."""
    dist = trials[0].distributions[name]
    raw = [t.params[name] for t in trials]
    if isinstance(dist, CategoricalDistribution):
        return _category_dim(name, raw, dist.choices)
    if isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
        return _log_dim(name, raw, dist.low, dist.high)
    return ParallelDim(label=name, values=tuple(float(v) for v in raw))


def _value_dim(name: str, raw: Sequence[Any], spec: Mapping[str, Any]) -> ParallelDim:
    """An axis for search-space value ``name`` (the ``values`` attribute), shaped by the spec."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if isinstance(spec.get("choices"), list) or not numeric:
        return _category_dim(name, raw, spec.get("choices") or [])
    if spec.get("log") and all(float(v) > 0 for v in raw):
        return _log_dim(
            name, raw, float(spec.get("low") or min(raw)), float(spec.get("high") or max(raw))
        )
    return ParallelDim(label=name, values=tuple(float(v) for v in raw))


def parallel_info(snap: StudySnapshot) -> ParallelInfo:
    """Parallel-coordinate axes over the complete trials' parameters and objective.

    When every complete trial records the search-space values it was built from (user
    attribute ``values``, one entry per spec parameter, whatever Optuna parameter sampled it),
    the axes are those, in the spec's order; else Optuna's parameters. Parameters that some
    complete trials lack (conditional ones) or that never vary are left out and listed in
    ``omitted``.
    """
    done = snap.feasible_complete()
    space = spec_space(snap.spec())
    values = [v for t in done if (v := TrialRecord.of(t).values) is not None]
    use_values = bool(done) and len(values) == len(done)
    rows = values if use_values else [t.params for t in done]
    names = sorted({p for r in rows for p in r})
    if use_values:
        names.sort(key=lambda n: list(space).index(n) if n in space else len(space))
    dims, omitted = [], []
    for name in names:
        if any(name not in r for r in rows) or len({repr(r[name]) for r in rows}) < 2:
            omitted.append(name)
            continue
        raw = [r[name] for r in rows]
        dims.append(
            _value_dim(name, raw, space.get(name, {})) if use_values else _param_dim(name, done)
        )
    obj_dim = (
        ParallelDim(label="objective", values=tuple(objective(t) for t in done)) if done else None
    )
    return ParallelInfo(
        dims=tuple(dims),
        objective=obj_dim,
        numbers=tuple(t.number for t in done),
        omitted=tuple(omitted),
    )
