"""A study's folder under the artifacts root, ``<artifacts>/<study>``: its simulated data
(``data-<hash>``, written once), its trial folders (``trials-<uid>/trial-<n>``, keyed by the
study's uid) and its workers' logs (``logs-<uid>``), the pruning of checkpoints behind the
``artifacts.keep_best`` best trials, and the removal of what the study owns there (under the
folder's lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from vivit_hpo._io import atomic_dir, atomic_write_text
from vivit_hpo.errors import ArtifactPathError, StudyError
from vivit_hpo.search.progress import searched_complete
from vivit_hpo.search.record import is_yardstick, retried_numbers
from vivit_hpo.search.spec import StudySpec

__all__ = [
    "LOCK_FILE",
    "RECIPE_FILE",
    "UID_ATTR",
    "ensure_data",
    "logs_dir",
    "materialise_synth",
    "prune_checkpoints",
    "remove_study_files",
    "study_lock",
    "study_uid",
    "trial_dir",
    "trials_dir",
]

UID_ATTR = "uid"  # set once at creation: a study made again under the same name gets another
RECIPE_FILE = "recipe.json"  # in a simulated data folder: the recipe it was made from


def ensure_data(spec: StudySpec, study_name: str) -> list[Path]:
    """The study's session paths (:meth:`StudySpec.data_paths`); a simulator recipe is
    materialised once into ``<artifacts>/<study>/data-<hash of the recipe>`` (see
    :func:`materialise_synth`)."""
    paths = spec.data_paths(study_name)
    if spec.data.synth is not None:
        materialise_synth(spec, paths[0])
    return paths


def _recipe_of(folder: Path) -> Any:
    """The recipe a simulated data folder records (its ``recipe.json``); None without one."""
    try:
        return json.loads((folder / RECIPE_FILE).read_text())
    except (OSError, ValueError):
        return None


def materialise_synth(spec: StudySpec, out: Path) -> Path:
    """Write the spec's simulated sessions (``data.synth``) into the folder ``out`` once, with
    the recipe they are made from (:meth:`StudySpec.synth_recipe`: ``data.synth`` and the base
    config's ``num_lags``, at which the oracle is scored) in ``out/recipe.json``.

    The folder appears whole (written beside it, then renamed), under a file lock so that
    concurrent workers write it once. It is reused only when its recipe is the spec's; a folder
    of another recipe, or one without a recipe, is never replaced (a study may train on it).
    Returns ``out``.

    Raises:
        ArtifactPathError: ``out`` holds data of another recipe, or other files.
    """
    recipe = spec.synth_recipe()
    if _recipe_of(out) == recipe:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _recipe_of(out)
        if found == recipe:
            return out
        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            what = (
                f"simulated data of another recipe ({json.dumps(found, sort_keys=True)})"
                if found is not None
                else f"files without a {RECIPE_FILE} (not simulated for a recipe)"
            )
            raise ArtifactPathError(
                f"{out}: holds {what}, not of {json.dumps(recipe, sort_keys=True)}; it is never "
                "replaced: remove it if nothing uses it, or write the data elsewhere"
            )
        from vivit_hpo.data import synthesize

        s = spec.data.synth
        assert s is not None
        with atomic_dir(out) as tmp:
            synthesize(
                tmp,
                sessions=s.sessions,
                neurons=s.neurons,
                frames=s.frames,
                size=s.size,
                behavior=s.behavior,
                frame_rate=s.frame_rate,
                seed=s.seed,
                num_lags=recipe["num_lags"],
            )
            atomic_write_text(tmp / RECIPE_FILE, json.dumps(recipe, indent=2, sort_keys=True))
    return out


def study_uid(study: optuna.Study) -> str | None:
    """The id the study got at creation (None for a study made before studies had one)."""
    uid = study.user_attrs.get(UID_ATTR)
    return uid if isinstance(uid, str) and uid else None


def trials_dir(spec: StudySpec, study_name: str, uid: str | None) -> Path:
    """``<artifacts>/<study>/trials-<uid>``: the folder of the study's trial folders, its own
    (a study of the same name in another storage, or made again, has another uid); the study's
    folder itself for a study without a uid."""
    return spec.artifact_path(study_name, *_trials_parts(uid))


def _trials_parts(uid: str | None) -> tuple[str, ...]:
    return (f"trials-{uid}",) if uid else ()


def logs_dir(spec: StudySpec, study_name: str, uid: str | None) -> Path:
    """``<artifacts>/<study>/logs-<uid>``: the logs of the workers ``vivit-hpo run`` starts,
    the study's own like its trial folders (a study of the same name in another storage writes
    its own); ``<artifacts>/<study>/logs`` for a study without a uid."""
    return spec.artifact_path(study_name, f"logs-{uid}" if uid else "logs")


def trial_dir(spec: StudySpec, study_name: str, number: int, *, uid: str | None) -> Path:
    """``<artifacts>/<study>/trials-<uid>/trial-<number>``: config, metrics and checkpoints of
    one trial (``<artifacts>/<study>/trial-<number>`` for a study without a uid).

    The folder is keyed by the study's uid (:func:`study_uid`), not its name alone, so a study
    deleted and created again under the same name never resumes the old one's checkpoints.
    This is the one place that says where a trial's folder is. Beside the trainer's files it
    holds :data:`~vivit_hpo.search.record.EPOCHS_FILE`, who trained each epoch.
    """
    return spec.artifact_path(study_name, *_trials_parts(uid), f"trial-{number}")


# A study's trial folders: ``trials-<uid>``, or ``trial-<n>`` of a study without a uid.
_TRIALS = re.compile(r"trials-.+|trial-[0-9]+")
_OLD_TRIAL = re.compile(r"trial-[0-9]+")
LOCK_FILE = ".lock"


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold ``<folder>/.lock`` (made, with the folder, if need be): creating a study of
    simulated data and deleting a study's files take it, so that a delete never removes the
    data a study of the same name (in another storage) is being created on. A delete removes
    the lock file with the folder; a process that waited for it then takes a new one."""
    lock_path = folder / LOCK_FILE
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            f = open(lock_path, "a+")  # noqa: SIM115 - closed below or after the block
        except FileNotFoundError:
            continue  # the folder went meanwhile
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(f.fileno()), os.stat(lock_path))
            except FileNotFoundError:
                current = False
            if current:
                yield
                return


def _remove(path: Path, name: str) -> None:
    """Remove a file or a folder tree (a symlink itself, never what it points to).

    Raises:
        StudyError: it could not be removed, in one line.
    """
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise StudyError(
            f"study {name!r}: could not remove {path}: {e.strerror or e}{where}; the study is "
            f"still in the storage (some of its files may be gone): fix that and run "
            f"`vivit-hpo study delete {name}` again"
        ) from e


def remove_study_files(spec: StudySpec, study_name: str, *, uid: str | None) -> list[Path]:
    """Remove the files of one study: its trial folders (``trials-<uid>/``; the ``trial-<n>/``
    of a study without a uid) and its workers' logs (``logs-<uid>/``), then the rest of
    ``<artifacts>/<study>`` (the simulated data, the logs of a study without a uid) only when no
    other study's trial folders are left in it: a study of the same name in another storage, or
    one deleted with ``--keep-artifacts``, shares the folder and its data. Nothing outside
    ``<artifacts>/<study>`` is touched. Returns the folders removed.

    Raises:
        ArtifactPathError: a trial folder that is a symlink or resolves outside the folder.
        StudyError: a file could not be removed (what was removed stays removed).
    """
    folder = spec.study_dir(study_name)
    if not folder.is_dir():
        return []
    with study_lock(folder):
        if uid:
            names = [f"trials-{uid}", logs_dir(spec, study_name, uid).name]
        else:
            names = sorted(p.name for p in folder.iterdir() if _OLD_TRIAL.fullmatch(p.name))
        for n in names:
            path = folder / n
            if "/" in n or path.is_symlink() or spec.artifact_path(study_name, n) != path:
                raise ArtifactPathError(
                    f"study {study_name!r}: {folder / n} is not a folder of the study's own (a "
                    "symlink?); remove it by hand, nothing was deleted"
                )
        removed = []
        for path in (folder / n for n in names):
            if path.exists():
                _remove(path, study_name)
                removed.append(path)
        if any(_TRIALS.fullmatch(p.name) for p in folder.iterdir()):
            return removed  # the folder is another study's too
        for path in sorted(folder.iterdir()):
            if path.name != LOCK_FILE:
                _remove(path, study_name)
        _remove(folder / LOCK_FILE, study_name)
    with contextlib.suppress(OSError):
        folder.rmdir()  # a study made meanwhile keeps what it has just written
    return [folder]


def prune_checkpoints(study: optuna.Study, spec: StudySpec) -> list[Path]:
    """Delete the checkpoints of every finished trial except the ``artifacts.keep_best`` best
    complete ones (config.yaml and metrics.json stay). Returns the folders emptied.

    Workers call it after each trial they finish, so a long study keeps only the best
    checkpoints on disk all along; call it under the study's claim lock while workers run, so
    that no trial is failed and re-enqueued meanwhile. A yardstick keeps its checkpoints. A
    failed trial whose retry has not
    finished keeps its checkpoints: the retry resumes from them.
    """
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    retried = retried_numbers(trials)

    def resumable(t: FrozenTrial) -> bool:
        n = t.number
        while n in retried and n in by_number:
            n = retried[n]
        return n != t.number and n in by_number and not by_number[n].state.is_finished()

    complete = sorted(searched_complete(trials), key=lambda t: t.value or -math.inf, reverse=True)
    # The yardsticks' checkpoints stay: one per yardstick, the search's result's reference.
    keep = {t.number for t in complete[: spec.artifacts.keep_best]}
    keep |= {t.number for t in trials if is_yardstick(t) and t.state == TrialState.COMPLETE}
    uid = study_uid(study)
    removed = []
    for t in trials:
        if not t.state.is_finished() or t.number in keep or resumable(t):
            continue
        ckpt = trial_dir(spec, study.study_name, t.number, uid=uid) / "checkpoints"
        if ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt.parent)
    return removed
