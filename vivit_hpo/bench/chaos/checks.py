"""The checks of a chaos run, on what the study and its folders hold once ``run`` is stopped
(see :mod:`vivit_hpo.bench.chaos`), and the per-epoch overlap check they use (pure)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.bench.chaos.driver import Driver
from vivit_hpo.bench.chaos.result import Check
from vivit_hpo.bench.chaos.sandbox import artifacts_env, snapshot
from vivit_hpo.search.record import FAIL_REASON, FAILED_TRIAL, EpochRecord, read_epochs, status
from vivit_hpo.search.spec import study_n_trials
from vivit_hpo.search.study import load_study, progress, retried_numbers, study_uid, trial_dir
from vivit_hpo.training.run import epoch_score

__all__ = ["overlapping_epochs", "study_checks"]


def overlapping_epochs(
    records: Sequence[EpochRecord], root_of: dict[int, int] | None = None
) -> list[tuple[EpochRecord, EpochRecord]]:
    """Pairs of epochs of one logical trial trained by two workers at overlapping times.

    Args:
        records: the per-epoch records (of any trials, any folders; duplicates are fine).
        root_of: ``{trial number: the number of the first trial of its retry chain}``; a
            number missing from it is its own root.

    Returns:
        ``(a, b)`` with ``a.start <= b.start``, different workers, ``b.start < a.end``.
    """
    roots = root_of or {}
    chains: dict[int, list[EpochRecord]] = {}
    for r in set(records):
        chains.setdefault(roots.get(r.trial, r.trial), []).append(r)
    found = []
    for chain in chains.values():
        chain.sort(key=lambda r: (r.start, r.end))
        for i, a in enumerate(chain):
            for b in chain[i + 1 :]:
                if b.start >= a.end:
                    break
                if b.worker != a.worker:
                    found.append((a, b))
    return found


def _root_of(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    return {t.number: int(t.system_attrs.get(FAILED_TRIAL, t.number)) for t in trials}


def _best_in_metrics(folder: Path) -> tuple[float | None, list[int]]:
    try:
        history = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None, []
    values = [epoch_score(h) for h in history]  # the study's objective, as the trial reports
    return (max(values) if values else None), [int(h["epoch"]) for h in history]


def study_checks(
    d: Driver,
    trials: list[FrozenTrial],
    before: dict[str, tuple[int, int]],
    inputs: list[Path],
) -> tuple[list[Check], int]:
    n_trials = study_n_trials(d.spec)
    p = progress(trials, n_trials)
    checks = [
        Check(
            "budget",
            p.finished == n_trials,
            f"{p.finished} logical trials in a final state, budget {n_trials} "
            f"({p.retried} retried failures not counted)",
        )
    ]
    unfinished = [f"#{t.number} {t.state.name}" for t in trials if not t.state.is_finished()]
    checks.append(Check("final", not unfinished, ", ".join(unfinished) or "all final"))

    uid = None
    if trials and d.storage is not None:
        uid = study_uid(load_study(d.storage, d.name))
    with artifacts_env(d.artifacts):
        folders = {t.number: trial_dir(d.spec, d.name, t.number, uid=uid) for t in trials}
        chain_dir = trial_dir(d.spec, d.name, 0, uid=uid).parent
    # Every trial folder, not only the final ones: a worker that went on training a trial that
    # another took over writes its records into the folder it started in.
    records = [r for f in sorted(chain_dir.glob("trial-*")) for r in read_epochs(f)]
    roots = _root_of(trials)
    overlaps = overlapping_epochs(records, roots)
    detail = "; ".join(
        f"trial #{roots.get(a.trial, a.trial)}: epoch {a.epoch} by {a.worker} "
        f"[{a.start:.1f}, {a.end:.1f}] and epoch {b.epoch} by {b.worker} [{b.start:.1f}, "
        f"{b.end:.1f}]"
        for a, b in overlaps[:5]
    )
    checks.append(
        Check(
            "no-overlap",
            not overlaps,
            detail or f"{len(records)} epoch records, no two workers at once on a trial",
        )
    )

    recorded: dict[int, set[int]] = {}
    for r in records:
        recorded.setdefault(roots.get(r.trial, r.trial), set()).add(r.epoch)
    bad_values, missing = [], []
    complete = [t for t in trials if t.state == TrialState.COMPLETE and status(t) == "complete"]
    for t in complete:
        best, epochs = _best_in_metrics(folders[t.number])
        if best is None or t.value is None or not math.isclose(best, t.value, rel_tol=1e-9):
            bad_values.append(f"#{t.number}: value {t.value}, metrics.json best {best}")
        gaps = sorted(set(epochs) - recorded.get(roots[t.number], set()))
        if gaps:
            missing.append(f"#{t.number}: epochs {gaps}")
    checks.append(
        Check(
            "epochs-recorded",
            not missing,
            "; ".join(missing) or f"every epoch of {len(complete)} complete trials recorded",
        )
    )
    checks.append(
        Check(
            "values",
            not bad_values,
            "; ".join(bad_values) or f"{len(complete)} complete values = their metrics.json",
        )
    )

    # Every file of the sandbox outside the artifacts root is a write outside it (the sandbox
    # starts empty and holds the run's home, working directory and TMPDIR). Empty folders are
    # named but pass: libraries make them on import (torch's ``$TMPDIR/torchinductor_<user>``).
    outside = [p for p in sorted(d.sandbox.rglob("*")) if not p.is_relative_to(d.artifacts)]
    files = [str(p.relative_to(d.sandbox)) for p in outside if not p.is_dir()]
    empty = [
        str(p.relative_to(d.sandbox))
        for p in outside
        if p.is_dir() and p.parent != d.sandbox and not any(p.iterdir())
    ]
    after = snapshot(inputs)
    changed = sorted({path for path, _ in set(before.items()) ^ set(after.items())})
    bad = files + [f"input changed: {path}" for path in changed]
    detail = "; ".join(bad[:10]) or "no file outside the artifacts root; inputs unchanged"
    if empty:
        detail += f" (empty folders: {', '.join(empty[:5])})"
    checks.append(Check("sandbox", not bad, detail))

    retried = retried_numbers(trials)
    lost = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    why = "; ".join(
        f"#{t.number}: {t.user_attrs.get(FAIL_REASON) or 'no heartbeat, out of retries'}"
        for t in lost
    )
    checks.append(Check("lost", not lost, why or "0 trials lost"))
    return checks, len(lost)
