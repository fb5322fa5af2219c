"""Studies in the storage: create, read back, list, enqueue, delete, and the one opener of an
existing study (:func:`load_study`).

A study is an Optuna study (direction: maximise the mean validation BPS) whose user attributes
hold the spec it was created from (``spec``, YAML text), so that any worker on any machine
rebuilds the same sampler, pruner, search space and trial configs from the database alone.

Its standing (progress counts, rows, the best trial) is :mod:`~vivit_hpo.search.progress`, its
folder under the artifacts root :mod:`~vivit_hpo.search.artifacts`, the export of its best trial
:mod:`~vivit_hpo.search.export`; their names are importable from here too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

import vivit_hpo
from vivit_hpo.config import parse_override
from vivit_hpo.errors import (
    ArtifactPathError,
    ConfigError,
    SpecError,
    StudyError,
    StudyNotFoundError,
)
from vivit_hpo.metrics import objective_label
from vivit_hpo.search.artifacts import LOCK_FILE as LOCK_FILE
from vivit_hpo.search.artifacts import RECIPE_FILE as RECIPE_FILE
from vivit_hpo.search.artifacts import (
    UID_ATTR,
    ensure_data,
    logs_dir,
    materialise_synth,
    prune_checkpoints,
    remove_study_files,
    study_lock,
    study_uid,
    trial_dir,
    trials_dir,
)
from vivit_hpo.search.export import export_best
from vivit_hpo.search.progress import (
    Standing,
    StudyProgress,
    TrialRow,
    best_of,
    best_trial,
    oracle_test_bps,
    progress,
    standings,
    trial_rows,
)
from vivit_hpo.search.progress import is_infeasible as is_infeasible
from vivit_hpo.search.record import (
    BASELINE,
    EXTRA_OVERRIDES,
    YARDSTICK,
    YARDSTICK_CONFIG,
    response_kinds,
)
from vivit_hpo.search.record import retried_numbers as retried_numbers
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

# The names of progress, artifacts and export were this module's (and still import from here),
# as are the ``X as X`` imports above (LOCK_FILE, RECIPE_FILE, is_infeasible, retried_numbers).
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
    "logs_dir",
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


def _names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError as e:
        known = ", ".join(_names(storage)[:10]) or "none"
        raise StudyNotFoundError(
            f"study {name!r} does not exist (studies: {known}); create it with "
            f"`vivit-hpo study create {name} --spec FILE`"
        ) from e


def read_spec(storage: optuna.storages.BaseStorage, name: str) -> StudySpec:
    """The spec stored in study ``name``.

    Raises:
        StudyNotFoundError: no such study (a :class:`StudyError`).
        StudyError: it was not created by vivit-hpo.
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
        with study_lock(spec.study_dir(name)):
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
    """Delete the study and, with ``artifacts``, first its files
    (:func:`~vivit_hpo.search.artifacts.remove_study_files`): files first, the storage's rows
    after, so that a removal that fails leaves the study there to delete again. Returns the
    folders removed.

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
