"""Export a study's best trial: its run config as YAML for ``vivit-hpo train``, and, if asked, a
run folder that ``vivit-hpo evaluate`` and ``predict`` accept, out of the study's artifacts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial

from vivit_hpo._io import atomic_dir, atomic_write_text
from vivit_hpo.errors import ConfigError, StudyError
from vivit_hpo.metrics import objective_label
from vivit_hpo.search.artifacts import ensure_data, study_uid, trial_dir
from vivit_hpo.search.progress import best_trial
from vivit_hpo.search.record import TrialRecord, response_kinds
from vivit_hpo.search.spec import StudySpec

__all__ = ["export_best"]


def export_best(
    study: optuna.Study, spec: StudySpec, out: Path, *, run_dir: Path | None = None
) -> FrozenTrial:
    """Write the best trial's run config to ``out`` (YAML that ``vivit-hpo train --model``
    accepts), with a header naming the trial, its score and the command that reproduces it.

    With ``run_dir``, also write the winner as a run folder that ``vivit-hpo evaluate`` and
    ``predict`` accept (its config, sessions, metrics and best checkpoint), so that the model can
    leave the study's artifacts. The folder appears whole or not at all; an existing one is
    refused.

    Raises:
        StudyError: no complete trial, a trial without a stored config or checkpoint, or
            ``run_dir`` exists.
    """
    best = best_trial(study)
    record = TrialRecord.of(best)
    cfg = record.run_config
    if cfg is None:
        raise StudyError(f"trial {best.number} has no stored run config; was it run by vivit-hpo?")
    if run_dir is not None:
        folder = trial_dir(spec, study.study_name, best.number, uid=study_uid(study))
        _export_run_dir(folder, run_dir, best.number)
    paths = " ".join(f"--data {p}" for p in ensure_data(spec, study.study_name))
    header = (
        f"# Best trial #{best.number} of study {study.study_name!r}: mean validation "
        f"{objective_label(spec.objective.name, response_kinds(study.get_trials()))} "
        f"{best.value:.5f} (best epoch {record.best_epoch}).\n"
        f"# Reproduce: vivit-hpo train {paths} --model {out} --out runs/{study.study_name}-best\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(cfg, sort_keys=False))
    return best


def _export_run_dir(src: Path, dst: Path, number: int) -> None:
    from vivit_hpo.training.run import best_checkpoint_path  # torch: only when needed

    if dst.exists():
        raise StudyError(f"--run-dir {dst}: already exists; pass a new folder")
    try:
        ckpt = best_checkpoint_path(src)
    except ConfigError as e:
        raise StudyError(
            f"trial {number}: its best checkpoint is gone ({e}); "
            "retrain it with the exported config"
        ) from e
    with atomic_dir(dst) as tmp:
        for name in ("config.yaml", "sessions.json", "metrics.json"):
            shutil.copy2(src / name, tmp / name)
        (tmp / "checkpoints").mkdir()
        shutil.copy2(ckpt, tmp / "checkpoints" / ckpt.name)
