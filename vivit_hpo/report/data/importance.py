"""Hyperparameter importances, and how far to trust them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import optuna

from vivit_hpo.report.snapshot import StudySnapshot

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "RELIABLE_IMPORTANCE_TRIALS",
    "ImportanceInfo",
    "importance_info",
]


@dataclass(frozen=True)
class ImportanceInfo:
    """Hyperparameter importances (sum to 1), most important first, and how far to trust them.

    ``reliable`` is False when there are fewer than :data:`RELIABLE_IMPORTANCE_TRIALS` complete
    trials, when the evaluator warned, or when every parameter came out equal; ``note`` says
    which (and why importances are absent, when they are).
    """

    importances: dict[str, float]
    evaluator: str
    num_trials: int
    note: str | None
    reliable: bool = False

    @property
    def tied(self) -> bool:
        """All parameters equally important: the evaluator could not tell them apart."""
        v = list(self.importances.values())
        return len(v) > 1 and max(v) - min(v) < 1e-9


MIN_IMPORTANCE_TRIALS = 2
# PED-ANOVA contrasts the top 10% of trials with the rest: below 20 trials that is one trial.
RELIABLE_IMPORTANCE_TRIALS = 20


def importance_info(
    snap: StudySnapshot, evaluator: optuna.importance.BaseImportanceEvaluator | None = None
) -> ImportanceInfo:
    """Hyperparameter importances over ``snap``'s complete trials (Optuna's default evaluator).

    With too few complete trials, or when the evaluator warns that the estimate is unreliable,
    ``note`` says so; the function never raises on small studies.
    """
    done = snap.feasible_complete()
    name = type(evaluator).__name__ if evaluator else "PedAnovaImportanceEvaluator"
    varying = {p for t in done for p in t.params if len({repr(u.params.get(p)) for u in done}) > 1}
    if len(done) < MIN_IMPORTANCE_TRIALS or not varying:
        why = (
            f"only {len(done)} complete trial(s)"
            if len(done) < MIN_IMPORTANCE_TRIALS
            else "no parameter varies across the complete trials"
        )
        return ImportanceInfo(
            {},
            name,
            len(done),
            f"Importances need at least "
            f"{MIN_IMPORTANCE_TRIALS} complete trials with varying parameters; "
            f"{why}.",
        )
    # A private in-memory copy: the evaluator needs a Study, the report must not write one.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            direction="maximize" if snap.maximize else "minimize",
            study_name=f"{snap.name}-importance",
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(done)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as e:
            return ImportanceInfo({}, name, len(done), f"Importances could not be computed: {e}")
    notes = list(
        dict.fromkeys(str(w.message) for w in caught if "importance" in str(w.message).lower())
    )
    info = ImportanceInfo(
        importances={k: float(v) for k, v in importances.items()},
        evaluator=name,
        num_trials=len(done),
        note=None,
    )
    if info.tied:
        notes.append(
            f"All {len(importances)} parameters came out equally important: "
            f"{len(done)} complete trials cannot tell them apart yet."
        )
    elif len(done) < RELIABLE_IMPORTANCE_TRIALS:
        notes.append(
            f"Only {len(done)} complete trials (fewer than {RELIABLE_IMPORTANCE_TRIALS}): treat "
            "these importances as rough."
        )
    return replace(info, note=" ".join(notes) or None, reliable=not notes)
