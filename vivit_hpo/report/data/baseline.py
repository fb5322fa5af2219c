"""The ViViT against the CNN baseline (and other model families, or another study)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from vivit_hpo.report.data._spec import param_targets, spec_space
from vivit_hpo.report.snapshot import StudySnapshot, objective
from vivit_hpo.search.record import TrialRecord

__all__ = [
    "BaselineGroup",
    "BaselineInfo",
    "baseline_info",
]


@dataclass(frozen=True)
class BaselineGroup:
    """The complete trials of one model family (or one study)."""

    label: str
    numbers: tuple[int, ...]
    values: tuple[float, ...]
    n_params: tuple[float | None, ...]
    best_number: int
    best_value: float


@dataclass(frozen=True)
class BaselineInfo:
    groups: tuple[BaselineGroup, ...]
    maximize: bool


_KIND_KEY = "model.core.kind"


def _core_kind_param(snap: StudySnapshot, trials: Sequence[FrozenTrial]) -> str | None:
    """The parameter that picks the core: the spec's ``to: model.core.kind``, or its name."""
    names = {p for t in trials for p in t.params}
    for name, param in spec_space(snap.spec()).items():
        if _KIND_KEY in param_targets(param) and name in names:
            return name
    return next((p for p in sorted(names) if p.endswith("core.kind") or p == "core_kind"), None)


def _spec_core_kind(snap: StudySnapshot) -> str | None:
    """The core kind every trial of the study has when the search does not vary it."""
    spec = snap.spec()
    base = spec.get("base") if isinstance(spec.get("base"), dict) else {}
    assert isinstance(base, dict)
    kind: Any = None
    for item in base.get("overrides") or []:
        key, _, value = str(item).partition("=")
        if key.strip() == _KIND_KEY:
            kind = value.strip()
    if kind is None:
        node: Any = base.get("config")
        for key in ("model", "core", "kind"):
            node = node.get(key) if isinstance(node, dict) else None
        kind = node
    for param in spec_space(spec).values():
        if _KIND_KEY in param_targets(param) and param.get("value") is not None:
            kind = param["value"]
    return kind if isinstance(kind, str) else None


def _groups_of(snap: StudySnapshot) -> dict[str, list[FrozenTrial]]:
    done = snap.feasible_complete()
    param = _core_kind_param(snap, done)
    fixed = _spec_core_kind(snap) or "vivit"  # the config's default core
    groups: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in done:
        kind = t.params.get(param) if param else None
        groups[str(kind or fixed)].append(t)
    return groups


def baseline_info(snap: StudySnapshot, compare: StudySnapshot | None = None) -> BaselineInfo | None:
    """ViViT against CNN-baseline trials, or None when there is only one model family.

    Families come from the search parameter written to ``model.core.kind`` (else the spec's
    base config, else ViViT, the default core) within ``snap``; a ``compare`` study adds its
    trials per family, labelled ``"<study> (<kind>)"``.
    """
    groups = _groups_of(snap)
    if compare is not None:
        other = _groups_of(compare)
        for kind, trials in other.items():
            groups[f"{compare.name} ({kind})"] = trials
    if len(groups) < 2:
        return None
    out = []
    for label, trials in groups.items():
        values = [objective(t) for t in trials]
        i = int(np.argmax(values) if snap.maximize else np.argmin(values))
        out.append(
            BaselineGroup(
                label=label,
                numbers=tuple(t.number for t in trials),
                values=tuple(values),
                n_params=tuple(
                    None if (p := TrialRecord.of(t).params_count) is None else float(p)
                    for t in trials
                ),
                best_number=trials[i].number,
                best_value=values[i],
            )
        )
    return BaselineInfo(groups=tuple(out), maximize=snap.maximize)
