"""A read-only copy of a study, taken once from the storage, that every figure is computed from.

Reading the database is the only I/O of a report's study sections: :func:`take_snapshot` does it
once, and the pure functions of :mod:`vivit_hpo.report.data` work on the snapshot, so that they
can be tested on studies built in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
import yaml
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from vivit_hpo.search.record import status

__all__ = [
    "STATUSES",
    "StudySnapshot",
    "objective",
    "parse_oracle",
    "take_snapshot",
    "trial_status",
    "trial_value",
]

# What a trial ended as, for the report: Optuna's states plus "infeasible" (a configuration
# rejected before training, whatever state the search recorded it with).
STATUSES = ("complete", "pruned", "infeasible", "failed", "running", "waiting")


@dataclass(frozen=True)
class StudySnapshot:
    """A study's trials and attributes at one moment.

    Attributes:
        name: the study name.
        direction: ``"maximize"`` or ``"minimize"`` (the first objective's).
        user_attrs: the study's user attributes (``spec``, ``oracle_bps``, ...).
        trials: every trial, by number.
        taken_at: when the snapshot was taken (a running trial's duration ends here).
        oracle: validation oracle BPS per session of simulated data (from the data folder's
            ``oracle.json``), merged with the study's ``oracle_bps`` user attribute, if any.
        oracle_test: test-split oracle BPS per session (``oracle.json``), for the test BPS of
            the best trial and the yardsticks.
    """

    name: str
    direction: str
    user_attrs: dict[str, Any]
    trials: tuple[FrozenTrial, ...]
    taken_at: datetime
    oracle: dict[str, float] = field(default_factory=dict)
    oracle_test: dict[str, float] = field(default_factory=dict)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def spec_text(self) -> str | None:
        """The study spec (YAML) the search stored, or None."""
        text = self.user_attrs.get("spec")
        return text if isinstance(text, str) else None

    def spec(self) -> dict[str, Any]:
        """The study spec parsed to a mapping; ``{}`` when absent or not a YAML mapping."""
        if not self.spec_text:
            return {}
        try:
            tree = yaml.safe_load(self.spec_text)
        except yaml.YAMLError:
            return {}
        return tree if isinstance(tree, dict) else {}

    @classmethod
    def from_study(cls, study: optuna.Study, taken_at: datetime | None = None) -> StudySnapshot:
        """Copy ``study`` (any storage) into a snapshot."""
        return cls(
            name=study.study_name,
            direction=_direction_name(study.directions[0]),
            user_attrs=dict(study.user_attrs),
            trials=tuple(study.get_trials(deepcopy=False)),
            taken_at=taken_at or datetime.now(),
        )

    def response_kinds(self) -> set[str]:
        """What the study's sessions hold (``spikes``, ``calcium``), as its trials recorded it;
        ``{"spikes"}`` when none did (a study from before the attribute, or no trial yet)."""
        from vivit_hpo.search.record import response_kinds

        return response_kinds(self.trials)

    @property
    def objective_name(self) -> str:
        """What the study maximised: ``bps`` or ``corr`` (the spec's ``objective``)."""
        from vivit_hpo.search.spec import objective_name

        return objective_name(self.spec().get("objective"))

    @property
    def calcium(self) -> bool:
        """True when a session is not spike counts: the report leads with the correlation."""
        from vivit_hpo.metrics import leads_with_corr

        return leads_with_corr(self.response_kinds())

    @property
    def metric(self) -> str:
        """The name of the study's value (:func:`~vivit_hpo.metrics.objective_label`): "BPS",
        "correlation (r)", or for calcium traces the Poisson log-likelihood gain per unit of
        response (never bits per spike)."""
        from vivit_hpo.metrics import objective_label

        return objective_label(self.objective_name, self.response_kinds())

    @property
    def poisson_metric(self) -> str:
        """The name of the Poisson score (BPS, or its calcium name), whatever the objective."""
        from vivit_hpo.metrics import objective_label

        return objective_label("bps", self.response_kinds())

    def oracle_per_session(self) -> dict[str, float]:
        """Validation oracle BPS by session: the ``oracle_bps`` user attribute, then ``oracle``."""
        return {**parse_oracle(self.user_attrs.get("oracle_bps")), **self.oracle}

    def feasible_complete(self) -> list[FrozenTrial]:
        """The search's complete trials with a finite objective value, by number (yardsticks
        left out: they are the report's yardstick section, never a point of the search)."""
        from vivit_hpo.search.record import is_yardstick

        return [
            t
            for t in self.trials
            if trial_status(t) == "complete" and _finite(trial_value(t)) and not is_yardstick(t)
        ]

    def best_trial(self) -> FrozenTrial | None:
        """The search's best complete trial by the study direction (never a yardstick: see
        :func:`~vivit_hpo.search.progress.best_of`), or None when there is none."""
        from vivit_hpo.search.study import best_of

        return best_of(self.trials, maximize=self.maximize)


def _direction_name(direction: StudyDirection) -> str:
    return "maximize" if direction == StudyDirection.MAXIMIZE else "minimize"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def trial_value(trial: FrozenTrial) -> float | None:
    """The trial's (first) objective value, or None when it has none."""
    if trial.values is None or len(trial.values) == 0:
        return None
    return float(trial.values[0])


def parse_oracle(raw: Any, split: str = "val") -> dict[str, float]:
    """``{session: bps}`` from ``{session: bps}`` or ``{session: {split: bps}}`` (``split``)."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for session, value in raw.items():
        if isinstance(value, Mapping):
            value = value.get(split)
        if isinstance(value, int | float) and math.isfinite(value):
            out[str(session)] = float(value)
    return out


def objective(trial: FrozenTrial) -> float:
    """The objective value of a trial that has one (complete trials); AssertionError otherwise."""
    value = trial_value(trial)
    assert value is not None, f"trial {trial.number} has no objective value"
    return value


def trial_status(trial: FrozenTrial) -> str:
    """What the trial ended as: one of :data:`STATUSES` (see :mod:`vivit_hpo.search.record`)."""
    return status(trial)


def take_snapshot(storage: str | BaseStorage | None, name: str) -> StudySnapshot:
    """Load study ``name`` from ``storage`` (a URL, None for the default, or an opened storage)
    into a snapshot; any Optuna study will do, not only one made by vivit-hpo.

    Raises:
        StorageError: the storage cannot be opened. StudyError: it has no study of that name.
    """
    from vivit_hpo.search.study import load_study

    study = load_study(storage, name, require_spec=False)
    return StudySnapshot.from_study(study)
