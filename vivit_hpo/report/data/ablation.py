"""Each factor's effect in a grid (ablation) study, spread over seeds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vivit_hpo.report.data._spec import param_targets, spec_space
from vivit_hpo.report.snapshot import StudySnapshot, objective

__all__ = [
    "AblationInfo",
    "AblationRow",
    "ablation_info",
    "is_seed_param",
]


def is_seed_param(name: str) -> bool:
    """Whether parameter ``name`` is a random seed (spread over it, not a factor)."""
    return name.split(".")[-1].lower() in ("seed", "seeds", "train_seed", "repeat", "replicate")


@dataclass(frozen=True)
class AblationRow:
    """One level of one factor: the mean objective over seeds and its spread.

    ``mean`` and ``std`` are over the per-seed means (each seed's trials at this level averaged
    over the other factors); without a seed parameter, over the trials themselves.
    """

    factor: str
    level: str
    mean: float
    std: float
    num_trials: int
    num_seeds: int
    delta: float  # mean minus the factor's best level mean (0 for the best level)


@dataclass(frozen=True)
class AblationInfo:
    factors: tuple[str, ...]
    seed_param: str | None
    rows: tuple[AblationRow, ...]
    num_complete: int
    num_excluded: int  # grid points that did not complete (pruned, failed, infeasible, running)


def _is_grid(snap: StudySnapshot) -> bool:
    if any("grid_id" in t.system_attrs for t in snap.trials):
        return True
    spec = snap.spec()
    sampler = spec.get("sampler")
    kind = sampler.get("name", sampler.get("kind")) if isinstance(sampler, dict) else sampler
    return isinstance(kind, str) and kind.lower() == "grid"


def _level_key(v: Any) -> tuple[int, Any]:
    # Numbers sort numerically, everything else by text; bools as text ("False" < "True").
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v))
    return (1, str(v))


def ablation_info(snap: StudySnapshot, force: bool = False) -> AblationInfo | None:
    """Each factor's effect in a grid (ablation) study, or None when the study is not a grid.

    Args:
        snap: the study.
        force: treat the study as a grid even without a grid sampler's marks.
    """
    if not (force or _is_grid(snap)):
        return None
    done = snap.feasible_complete()
    names = sorted({p for t in snap.trials for p in t.params})
    space = spec_space(snap.spec())
    seed = next(
        (n for n in names if is_seed_param(n) or "train.seed" in param_targets(space.get(n, {}))),
        None,
    )
    rows: list[AblationRow] = []
    factors = []
    for name in names:
        if name == seed:
            continue
        levels = sorted({t.params[name] for t in done if name in t.params}, key=_level_key)
        if len(levels) < 2:
            continue
        factors.append(name)
        stats = []
        for level in levels:
            at = [t for t in done if name in t.params and t.params[name] == level]
            by_seed: dict[Any, list[float]] = defaultdict(list)
            for t in at:
                key = t.params.get(seed) if seed else t.number
                by_seed[key].append(objective(t))
            means = np.array([np.mean(v) for v in by_seed.values()])
            std = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
            stats.append((level, float(means.mean()), std, len(at), len(by_seed) if seed else 0))
        best = max(s[1] for s in stats) if snap.maximize else min(s[1] for s in stats)
        for level, mean, std, n, n_seeds in stats:
            rows.append(AblationRow(name, str(level), mean, std, n, n_seeds, mean - best))
    return AblationInfo(
        factors=tuple(factors),
        seed_param=seed,
        rows=tuple(rows),
        num_complete=len(done),
        num_excluded=len(snap.trials) - len(done),
    )
