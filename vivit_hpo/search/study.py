"""Studies in the storage: create, read back, list, inspect, export, enqueue, delete.

A study is an Optuna study (direction: maximise the mean validation BPS) whose user attributes
hold the spec it was created from (``spec``, YAML text), so that any worker on any machine
rebuilds the same sampler, pruner, search space and trial configs from the database alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

import vivit_hpo
from vivit_hpo._io import atomic_dir, atomic_write_text
from vivit_hpo.config import parse_override
from vivit_hpo.errors import ArtifactPathError, ConfigError, SpecError, VivitHpoError
from vivit_hpo.metrics import objective_label
from vivit_hpo.search.record import (
    BASELINE,
    EXTRA_OVERRIDES,
    YARDSTICK,
    YARDSTICK_CONFIG,
    TrialRecord,
    is_yardstick,
    response_kinds,
    retried_numbers,
    status,
)
from vivit_hpo.search.space import base_values, check_values, to_optuna_params, trial_config
from vivit_hpo.search.spec import (
    StudySpec,
    check_data,
    check_study_name,
    objective_name,
    spec_from_text,
    spec_to_text,
    study_n_trials,
    yardstick_trees,
)
from vivit_hpo.search.storage import get_storage, retrying

__all__ = [
    "Standing",
    "StudyError",
    "StudyProgress",
    "TrialRow",
    "best_of",
    "best_trial",
    "create_study",
    "delete_study",
    "enqueue",
    "enqueue_baseline",
    "enqueue_yardsticks",
    "ensure_data",
    "export_best",
    "list_studies",
    "load_study",
    "materialise_synth",
    "objective_hint",
    "oracle_test_bps",
    "progress",
    "prune_checkpoints",
    "read_spec",
    "remove_study_files",
    "standings",
    "study_uid",
    "trial_dir",
    "trial_rows",
    "trials_dir",
]

SPEC_ATTR = "spec"
UID_ATTR = "uid"  # set once at creation: a study made again under the same name gets another
RECIPE_FILE = "recipe.json"  # in a simulated data folder: the recipe it was made from


class StudyError(VivitHpoError):
    """A study that does not exist (or already exists), or has no result to show yet."""


def _names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError as e:
        known = ", ".join(_names(storage)[:10]) or "none"
        raise StudyError(
            f"study {name!r} does not exist (studies: {known}); create it with "
            f"`vivit-hpo study create {name} --spec FILE`"
        ) from e


def read_spec(storage: optuna.storages.BaseStorage, name: str) -> StudySpec:
    """The spec stored in study ``name``.

    Raises:
        StudyError: no such study, or it was not created by vivit-hpo.
        ArtifactPathError: the stored study's name is not a plain folder name (a study made
            before names were checked); only `study delete NAME --keep-artifacts` takes it.
    """
    study_id = _study_id(storage, name)
    try:
        check_study_name(name)
    except ArtifactPathError as e:
        raise ArtifactPathError(
            f"{e}; this study can only be removed from the storage, without touching any "
            "folder: `vivit-hpo study delete NAME --keep-artifacts`"
        ) from e
    text = storage.get_study_user_attrs(study_id).get(SPEC_ATTR)
    if not isinstance(text, str):
        raise StudyError(f"study {name!r} has no vivit-hpo spec; it was not made by vivit-hpo")
    return spec_from_text(text, f"study {name!r} spec")


def load_study(
    storage: str | optuna.storages.BaseStorage | None,
    name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    require_spec: bool = True,
) -> optuna.Study:
    """Open the existing study ``name``: the one place the package does (``optuna.load_study``
    with a one-line error for a missing study).

    Args:
        storage: a storage URL, None (``$VIVIT_HPO_STORAGE`` or the embedded default) or an
            opened storage, which is used as it is (:func:`~vivit_hpo.search.storage.get_storage`).
        name: the study's name.
        sampler: the study's sampler; None: Optuna's default.
        pruner: the study's pruner; None: Optuna's default.
        require_spec: the study must have been made by vivit-hpo (its stored spec is read and
            checked); False: any Optuna study will do (a report reads those too).

    Raises:
        StudyError: no such study, or (``require_spec``) one without a vivit-hpo spec.
        StorageError: a URL that cannot be opened.
    """
    opened = get_storage(storage)
    if require_spec:
        read_spec(opened, name)
    else:
        _study_id(opened, name)
    return optuna.load_study(study_name=name, storage=opened, sampler=sampler, pruner=pruner)


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


def objective_hint(spec: StudySpec, name: str) -> str | None:
    """One line suggesting ``objective: corr`` where the spec keeps the default ``bps`` on
    sessions that are not spike counts (calcium traces); None otherwise."""
    if spec.objective.name != "bps" or spec.data.synth is not None:
        return None
    import h5py

    from vivit_hpo.data.contract import expand_paths, read_response_kind

    calcium = []
    for path in expand_paths(spec.data_paths(name)):
        with h5py.File(path, "r") as f:
            if read_response_kind(f) != "spikes":
                calcium.append(path.name)
    if not calcium:
        return None
    return (
        f"warning: {', '.join(calcium[:3])}{' ...' if len(calcium) > 3 else ''} hold calcium "
        "traces: the study maximises their Poisson score (no bits per spike); set "
        "`objective: corr` in the spec to maximise the correlation instead"
    )


def create_study(storage: optuna.storages.BaseStorage, name: str, spec: StudySpec) -> optuna.Study:
    """Create study ``name`` from a validated spec and materialise simulated data.

    A study of simulated data gets its trial folder ``trials-<uid>/`` at once, beside the data:
    it says that the data are in use (see :func:`delete_study`).

    Every session file is checked against the data contract first (:func:`check_data`), so
    that a file every trial would fail on is refused before anything is written.

    Raises:
        ArtifactPathError: the name is not a plain folder name (see ``check_study_name``).
        StudyError: the name is taken.
        SpecError: a session file breaks the data contract (the first problem, and how many
            more).
    """
    spec.study_dir(check_study_name(name))
    if name in _names(storage):
        raise StudyError(
            f"study {name!r} already exists; pick another name or `vivit-hpo study delete {name}`"
        )
    check_data(spec)
    uid = uuid.uuid4().hex[:12]
    claimed: Path | None = None
    if spec.data.synth is not None:
        with _study_lock(spec.study_dir(name)):
            ensure_data(spec, name)
            claimed = trials_dir(spec, name, uid)
            claimed.mkdir(parents=True, exist_ok=True)
    study: optuna.Study | None = None
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr(SPEC_ATTR, spec_to_text(spec))
        study.set_user_attr(UID_ATTR, uid)
        study.set_user_attr("created_at", dt.datetime.now(dt.timezone.utc).isoformat())
        study.set_user_attr("vivit_hpo_version", vivit_hpo.__version__)
        study.set_user_attr("n_trials", study_n_trials(spec))
        if spec.baseline and spec.sampler.name != "grid":
            enqueue_baseline(study, spec)
        enqueue_yardsticks(study, spec)
    except Exception:
        if study is not None:
            optuna.delete_study(study_name=name, storage=storage)
        if claimed is not None:
            with contextlib.suppress(OSError):
                claimed.rmdir()  # empty: no worker had the uid yet
        raise
    return study


def enqueue_baseline(study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """Enqueue the spec's base config as a trial (user attribute ``baseline``): the space's
    parameters at the base config's values where the space can take them, the sampler's draw
    for the others. A search then never ends worse than the config it starts from."""
    values = base_values(spec.space, spec.base_tree())
    study.enqueue_trial(
        to_optuna_params(spec.space, values), user_attrs={BASELINE: True}, skip_if_exists=False
    )
    return values


def enqueue_yardsticks(study: optuna.Study, spec: StudySpec) -> list[str]:
    """Enqueue one trial per yardstick of the spec (``baselines``): no parameters, the user
    attributes ``yardstick`` (its name) and ``yardstick_config`` (its run config, with the
    study's epoch budget), which the objective trains as it is. Stored in the trial, so that a
    worker on any machine trains it without the file. Returns the names enqueued.

    Raises:
        SpecError: a yardstick's file is missing or not a valid run config.
    """
    trees = yardstick_trees(spec)
    for name, tree in trees.items():
        study.enqueue_trial(
            {}, user_attrs={YARDSTICK: name, YARDSTICK_CONFIG: tree}, skip_if_exists=False
        )
    return list(trees)


def delete_study(storage: optuna.storages.BaseStorage, name: str, *, artifacts: bool) -> list[Path]:
    """Delete the study and, with ``artifacts``, first its files (:func:`remove_study_files`):
    files first, the storage's rows after, so that a removal that fails leaves the study there
    to delete again. Returns the folders removed.

    Without ``artifacts`` no folder is looked at, so a study stored under a name that is not a
    plain folder name can still be removed from the storage.

    Raises:
        StudyError: no such study, or a file could not be removed (the study is kept).
        ArtifactPathError: a folder that resolves outside the study's folder under the
            artifacts root (checked before anything is removed).
    """
    study_id = _study_id(storage, name)
    removed: list[Path] = []
    if artifacts:
        spec = read_spec(storage, name)
        uid = storage.get_study_user_attrs(study_id).get(UID_ATTR)
        removed = remove_study_files(spec, name, uid=uid if isinstance(uid, str) and uid else None)
    optuna.delete_study(study_name=name, storage=storage)
    return removed


# -- progress and tables -------------------------------------------------------------------------


def is_infeasible(t: FrozenTrial) -> bool:
    return status(t) == "infeasible"


@dataclass(frozen=True)
class StudyProgress:
    """Counts for the live table and the budget. ``logical`` excludes retried failures (their
    retry stands in for them); the budget is spent when ``logical >= n_trials``."""

    n_trials: int
    running: int
    waiting: int
    complete: int
    pruned: int
    infeasible: int
    failed: int  # final failures (NaN, OOM, errors, or out of retries)
    retried: int  # failures that were retried (dead worker, interrupted)
    logical: int
    best_value: float | None
    best_number: int | None
    first_start: dt.datetime | None
    last_end: dt.datetime | None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.infeasible + self.failed

    @property
    def done(self) -> bool:
        """Budget allocated and nothing running or waiting."""
        return self.logical >= self.n_trials and self.running == 0 and self.waiting == 0


def progress(trials: Sequence[FrozenTrial], n_trials: int) -> StudyProgress:
    """Count a study's trials (pure: pass ``study.get_trials(deepcopy=False)``)."""
    retried = retried_numbers(trials)
    c: Counter[str] = Counter()
    for t in trials:
        # RUNNING with a retry: failed as stale by a process that died before it failed it.
        if t.state in (TrialState.FAIL, TrialState.RUNNING) and t.number in retried:
            c["retried"] += 1
            continue
        c["logical"] += 1
        c[status(t)] += 1
    best = best_of(trials)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return StudyProgress(
        n_trials=n_trials,
        running=c["running"],
        waiting=c["waiting"],
        complete=c["complete"],
        pruned=c["pruned"],
        infeasible=c["infeasible"],
        failed=c["failed"],
        retried=c["retried"],
        logical=c["logical"],
        best_value=None if best is None else best.value,
        best_number=None if best is None else best.number,
        first_start=min(starts) if starts else None,
        last_end=max(ends) if ends else None,
    )


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, INFEASIBLE, FAIL, RUNNING, WAITING, RETRIED
    value: float | None
    test_value: float | None  # the best epoch's checkpoint on the test split
    other: float | None  # the best epoch's validation score of the other objective
    epochs: int
    best_epoch: int | None
    params: dict[str, Any]
    reason: str
    seconds: float | None


def _reason(r: TrialRecord, retried_as: int | None) -> str:
    if retried_as is not None:
        return f"{r.fail_reason or 'worker lost (no heartbeat)'}; retried as #{retried_as}"
    if r.reason:
        return r.reason
    if r.resumed_from_epoch:
        return f"resumed after epoch {r.resumed_from_epoch} of #{r.resumed_from_trial}"
    if r.yardstick:
        return f"yardstick {r.yardstick} (not searched)"
    return "the base config (baseline)" if r.baseline else ""


def trial_rows(trials: Sequence[FrozenTrial], objective: str = "bps") -> list[TrialRow]:
    """One row per trial for ``study show`` (pure): the value and test score of
    ``objective`` (``bps`` or ``corr``), and beside them the validation score of the other."""
    retried = retried_numbers(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        r = TrialRecord.of(t)
        retried_as = retried.get(t.number) if t.state == TrialState.FAIL else None
        if retried_as is not None:
            state = "RETRIED"
        else:
            state = {"complete": "COMPLETE", "failed": "FAIL"}.get(r.status, r.status.upper())
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            TrialRow(
                number=r.number,
                state=state,
                value=r.value,
                test_value=r.test_corr if objective == "corr" else r.test_bps,
                other=r.val_bps if objective == "corr" else r.val_corr,
                epochs=r.epochs,
                best_epoch=r.best_epoch,
                params=r.params,
                reason=_reason(r, retried_as),
                seconds=seconds,
            )
        )
    return rows


def list_studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """Name, budget, progress and best value of every study in the storage."""
    out = []
    for s in storage.get_all_studies():
        trials = storage.get_all_trials(
            storage.get_study_id_from_name(s.study_name), deepcopy=False
        )
        n = s.user_attrs.get("n_trials", len(trials))
        p = progress(trials, int(n))
        text = s.user_attrs.get(SPEC_ATTR)
        description, tree = "", dict[str, Any]()
        if isinstance(text, str):
            tree = yaml.safe_load(text) or {}
            description = tree.get("description", "")
        label = objective_label(
            objective_name(tree.get("objective")), response_kinds(trials), header=True
        )
        out.append(
            {
                "name": s.study_name,
                "n_trials": n,
                "progress": p,
                "description": description,
                "label": label,  # the name of its value: BPS, r, LL gain/resp
                "vivit_hpo": isinstance(text, str),
            }
        )
    return out


def _searched_complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The search's feasible COMPLETE trials with a finite value: no yardstick."""
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and not is_infeasible(t)
        and not is_yardstick(t)
        and t.value is not None
        and math.isfinite(t.value)
    ]


def best_of(trials: Sequence[FrozenTrial], *, maximize: bool = True) -> FrozenTrial | None:
    """The search's best trial (pure): the feasible COMPLETE trial with the best value, the
    lowest number on a tie; never a yardstick (``baselines``), whatever it scores. The one
    rule every command, the live table and the report use (not Optuna's ``best_trial``, which
    would pick a yardstick that scores higher). None when no such trial has completed."""
    done = _searched_complete(trials)
    if not done:
        return None
    sign = 1.0 if maximize else -1.0
    return max(done, key=lambda t: (sign * float(t.value or 0.0), -t.number))


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The search's best trial (:func:`best_of`) of ``study``.

    Raises:
        StudyError: no trial of the search has completed yet.
    """
    best = best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if best is None:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial yet; run "
            f"`vivit-hpo worker {study.study_name}` and try again"
        )
    return best


@dataclass(frozen=True)
class Standing:
    """One row of the comparison of the best ViViT with the yardsticks."""

    label: str  # "best ViViT" or the yardstick's name
    number: int | None  # its trial (None: not finished yet)
    state: str  # complete, or what the yardstick's trial is doing / ended as
    test_bps: float | None
    fraction_of_oracle: float | None
    seconds: float | None  # training time (the trial's start to its end)
    params_count: int | None


def standings(
    trials: Sequence[FrozenTrial], oracle: float | None, *, maximize: bool = True
) -> list[Standing]:
    """The best ViViT (:func:`best_of`) beside each yardstick of the study (pure): test BPS,
    its fraction of the oracle's test BPS where the data has one, training seconds. Empty for a
    study without yardsticks. A yardstick retried after a lost worker shows its last trial."""
    yard: dict[str, TrialRecord] = {}
    for t in sorted(trials, key=lambda t: t.number):
        r = TrialRecord.of(t)
        if r.yardstick and (r.yardstick not in yard or t.state != TrialState.FAIL):
            yard[r.yardstick] = r
    if not yard:
        return []

    def row(label: str, r: TrialRecord | None) -> Standing:
        if r is None:
            return Standing(label, None, "none", None, None, None, None)
        frac = None
        if r.test_bps is not None and oracle is not None and oracle > 0:
            frac = r.test_bps / oracle
        return Standing(label, r.number, r.status, r.test_bps, frac, r.seconds, r.params_count)

    best = best_of(trials, maximize=maximize)
    out = [row("best ViViT", None if best is None else TrialRecord.of(best))]
    return out + [row(name, r) for name, r in yard.items()]


def oracle_test_bps(spec: StudySpec, study_name: str) -> float | None:
    """The oracle's test BPS (mean over sessions) where the study's data are simulated; None
    otherwise."""
    from vivit_hpo.data.simulate import oracle_split_mean

    return oracle_split_mean(spec.data_paths(study_name))


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


def enqueue(study: optuna.Study, spec: StudySpec, sets: Sequence[str]) -> dict[str, Any]:
    """Enqueue a trial: ``name=value`` fixes a space parameter, ``dotted.key=value`` overrides
    a run-config key of that trial only, in the grammar of ``train --set``
    (:func:`~vivit_hpo.config.parse_override`). Every value is checked before anything is
    enqueued. Returns what was enqueued.

    Raises:
        ConfigError: an item that is not ``key=value`` with a YAML value.
        SpecError: an unknown parameter, a value its parameter cannot take
            (:func:`~vivit_hpo.search.space.check_values`), or overrides that make an invalid
            config.
    """
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for item in sets:
        key, value = parse_override(item)
        (extra if "." in key else params)[key] = value
    checked = check_values(spec.space, params)
    optuna_params = to_optuna_params(spec.space, checked)
    if extra:
        try:
            trial_config(spec.base_tree(), {}, extra)
        except ConfigError as e:
            raise SpecError(f"--set: {e}".replace("trial config: ", "")) from e
    user_attrs = {EXTRA_OVERRIDES: extra} if extra else None
    retrying(
        lambda: study.enqueue_trial(optuna_params, user_attrs=user_attrs, skip_if_exists=False),
        what="enqueue a trial",
    )
    return {"params": checked, "overrides": extra}


# -- artifacts -----------------------------------------------------------------------------------


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
def _study_lock(folder: Path) -> Iterator[None]:
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
    of a study without a uid), then the rest of ``<artifacts>/<study>`` (the simulated data,
    the logs) only when no other study's trial folders are left in it: a study of the same name
    in another storage, or one deleted with ``--keep-artifacts``, shares the folder and its
    data. Nothing outside ``<artifacts>/<study>`` is touched. Returns the folders removed.

    Raises:
        ArtifactPathError: a trial folder that is a symlink or resolves outside the folder.
        StudyError: a file could not be removed (what was removed stays removed).
    """
    folder = spec.study_dir(study_name)
    if not folder.is_dir():
        return []
    with _study_lock(folder):
        if uid:
            names = [f"trials-{uid}"]
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

    complete = sorted(_searched_complete(trials), key=lambda t: t.value or -math.inf, reverse=True)
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
