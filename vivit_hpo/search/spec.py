"""The study spec: one YAML file that says everything about a search.

::

    description: what this study is for
    data:                          # session files (or folders of them), or a simulator recipe
      synth: {sessions: 1, neurons: 32, frames: 4000, size: [16, 16], seed: 0}
      # paths: [/data/sessions]
    base:                          # the run config every trial starts from
      config: {model: {...}, train: {...}}   # a mapping, or the path of a run-config YAML
      overrides: ["train.steps_per_epoch=50"]
    space:                         # omitted: the roadmap's space (DEFAULT_SPACE)
      patch: {choices: [2, 4, 8], to: model.core.kernel_size}
      stride: {choices: [2, 4, 8], le: patch, to: model.core.stride}
      lr: {low: 1.0e-4, high: 3.0e-3, log: true, to: train.lr}
    epochs: 20                     # per-trial budget (the pruner's max resource)
    baseline: true                 # the base config is the first trial: the winner is at least it
    baselines: [configs/cnn2d.yaml, configs/ln.yaml]   # yardsticks: a lab's own models, one
                                   # trial each, beside the search (never its result)
    sampler: {name: tpe, seed: 0, options: {}}
    pruner: {name: hyperband, options: {}}
    objective: bps                 # or corr: the mean per-unit correlation (calcium traces)
    budget: {n_trials: 100, timeout_minutes: null}
    heartbeat: {interval_s: 20, grace_s: 90, max_retry: 3, max_infra_retries: 3,
                max_interrupt_retries: 20, stall_s: 1800}
    feasibility: {max_memory_gb: null, memory_fraction: 0.9}
    artifacts: {dir: null, keep_best: 3}

Relative ``data.paths``, ``base.config`` and ``baselines`` paths are relative to the spec file;
``artifacts.dir`` (default ``artifacts``) is relative to ``$VIVIT_HPO_HOME`` or the current
directory. :func:`load_spec` resolves them to absolute paths and inlines the base config, so the
spec stored in the study (``study.user_attrs["spec"]``) is self-contained: every worker rebuilds
the sampler, the pruner and each trial's config from it.

Search-space parameters (see :mod:`vivit_hpo.search.space` for how they are sampled):

- ``choices: [...]`` categorical; ``low``/``high`` (``log``, ``step``) a float range, an integer
  range with ``type: int``; ``value: x`` a fixed value (not searched).
- ``to``: the run-config key(s) the value is written to (dotted, e.g. ``model.core.embed_dim``).
  A scalar written to a tuple-valued key fills every axis (``patch: 4`` -> kernel ``(4, 4, 4)``);
  ``model.core.kernel_size[0]`` writes one axis (the temporal one).
- ``le: other``: only values no larger than the earlier parameter ``other`` are sampled (the
  stride never exceeds the patch); each value of ``other`` gets its own Optuna parameter
  (``stride|patch=4``) because Optuna requires one fixed distribution per name.
- ``when: {other: [v1, v2]}``: the parameter exists only when the earlier ``other`` takes one of
  those values (a conditional parameter).

The sections' models are in :mod:`vivit_hpo.search.schema`; this module reads, resolves and
checks a spec file against them (the deep checks build the space and the sampler).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vivit_hpo import settings
from vivit_hpo.config import format_validation_error, parse_run_config, read_yaml
from vivit_hpo.errors import ConfigError, DataError, SpecError

# The schema's names are this module's too: the spec is imported from here.
from vivit_hpo.search.schema import (
    DEFAULT_SPACE,
    ArtifactSpec,
    BaseSpec,
    BudgetSpec,
    DataSpec,
    FeasibilitySpec,
    HeartbeatSpec,
    ObjectiveSpec,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    SynthSpec,
    check_study_name,
    effective_n_trials,
    grid_size,
    objective_name,
    study_n_trials,
)

__all__ = [
    "DEFAULT_SPACE",
    "ArtifactSpec",
    "BaseSpec",
    "BudgetSpec",
    "DataSpec",
    "FeasibilitySpec",
    "HeartbeatSpec",
    "ObjectiveSpec",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "StudySpec",
    "SynthSpec",
    "check_data",
    "check_study_name",
    "effective_n_trials",
    "grid_size",
    "load_spec",
    "objective_name",
    "parse_spec",
    "spec_from_text",
    "spec_to_text",
    "study_n_trials",
    "yardstick_trees",
]


def _resolve(tree: dict[str, Any], spec_dir: Path) -> dict[str, Any]:
    """Absolute data and artifact paths, the base config inlined: a self-contained spec."""
    tree = copy.deepcopy(tree)
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("paths"), list):
        data["paths"] = [
            os.path.normpath(spec_dir / str(p)) if not Path(str(p)).is_absolute() else str(p)
            for p in data["paths"]
        ]
    base = tree.get("base")
    if isinstance(base, dict) and isinstance(base.get("config"), str):
        path = Path(base["config"])
        path = path if path.is_absolute() else spec_dir / path
        try:
            base["config"] = read_yaml(path)
        except ConfigError as e:
            raise SpecError(f"base.config: {e}") from e
    if isinstance(tree.get("baselines"), list):
        tree["baselines"] = [
            str(p) if Path(str(p)).is_absolute() else os.path.normpath(spec_dir / str(p))
            for p in tree["baselines"]
        ]
    arts = tree.get("artifacts")
    if isinstance(arts, dict) and isinstance(arts.get("dir"), str):
        d = Path(arts["dir"]).expanduser()
        arts["dir"] = str(d if d.is_absolute() else os.path.normpath(settings.HOME.get() / d))
    elif arts is None or (isinstance(arts, dict) and arts.get("dir") is None):
        tree.setdefault("artifacts", {})
        if isinstance(tree["artifacts"], dict):
            tree["artifacts"]["dir"] = str(settings.HOME.get() / "artifacts")
    return tree


def parse_spec(tree: Mapping[str, Any], where: str = "spec", *, check: bool = True) -> StudySpec:
    """Validate a spec mapping (already resolved); with ``check`` also the deep checks.

    Raises:
        SpecError: one line naming the first bad key, its value and the fix.
    """
    try:
        spec = StudySpec.model_validate(dict(tree))
    except ValidationError as e:
        raise SpecError(format_validation_error(e, where)) from e
    if check:
        check_spec(spec, where)
    return spec


def load_spec(path: str | Path, *, check: bool = True) -> StudySpec:
    """Read, resolve and validate a spec file. Raises SpecError (one line) when it is bad."""
    path = Path(path)
    try:
        tree = read_yaml(path)
    except ConfigError as e:
        raise SpecError(str(e)) from e
    spec_dir = Path(os.path.abspath(path)).parent  # symlinks kept: the user's view of paths
    return parse_spec(_resolve(tree, spec_dir), str(path), check=check)


def spec_to_text(spec: StudySpec) -> str:
    """The spec as YAML, as stored in the study (``study.user_attrs["spec"]``)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def spec_from_text(text: str, where: str = "stored spec") -> StudySpec:
    """Parse a stored spec (no deep checks: they ran when the study was created)."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{where}: not valid YAML; recreate the study") from e
    return parse_spec(tree or {}, where, check=False)


def yardstick_trees(spec: StudySpec) -> dict[str, dict[str, Any]]:
    """The run config of each yardstick (``baselines``), by name (the file's stem), read from
    its file and made a trial's (:meth:`StudySpec.finish_tree`: the study's epoch budget), with
    the base config's split and validation subset (``_SAME_BINS_KEYS``), so that it is scored
    on the search's bins (with the same ``num_lags``: :func:`_check_yardsticks` refuses
    another).

    Raises:
        SpecError: a file that is missing or not a valid run config (one line naming it).
    """
    # Scored on the same bins as the search: the base's split and validation subset.
    base_data = spec.base_tree()["data"]
    same = {k: base_data[k] for k in _SAME_BINS_KEYS}
    out = {}
    for path in spec.baselines:
        try:
            tree = read_yaml(Path(path))
            tree["data"] = {**(tree.get("data") or {}), **same}
            out[Path(path).stem] = spec.finish_tree(tree, path)
        except ConfigError as e:
            raise SpecError(f"baselines: {e}") from e
    return out


# The data keys that decide which bins are scored: a yardstick takes the base config's.
_SAME_BINS_KEYS = ("val_fraction", "test_fraction", "split_seed", "split_chunk_s", "max_val_bins")


# -- deep checks ---------------------------------------------------------------------------------

_MAX_ENUMERATED = 20_000
_SAMPLED = 3_000


def _check_targets(spec: StudySpec, base: dict[str, Any], where: str) -> None:
    from vivit_hpo.search.space import target_exists

    for name, p in spec.space.items():
        for key in p.to:
            if not target_exists(base, key):
                raise SpecError(
                    f"{where}: space.{name}.to: {key!r} is not a run-config key; use a dotted "
                    "key of the run config (e.g. model.core.embed_dim, train.lr)"
                )


def _check_sampler(spec: StudySpec, where: str) -> None:
    from vivit_hpo.search.factory import build_pruner, build_sampler

    for key, build in (("sampler", build_sampler), ("pruner", build_pruner)):
        try:
            build(spec)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from e
        except (TypeError, ValueError) as e:
            msg = str(e).splitlines()[0]
            raise SpecError(
                f"{where}: {key}.options: {msg}; check the option names of "
                f"{getattr(spec, key).name} in Optuna's documentation"
            ) from e


def _check_yardsticks(spec: StudySpec, shapes: list[tuple[int, int, int]], where: str) -> None:
    """Each yardstick's run config is valid and its model takes every session's frames."""
    from vivit_hpo.models import check_feasible
    from vivit_hpo.models.encoder import clip_geometry

    try:
        trees = yardstick_trees(spec)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from e
    lags = spec.base_tree()["data"]["num_lags"]
    for path, tree in zip(spec.baselines, trees.values(), strict=True):
        cfg = parse_run_config(tree, path)
        if cfg.data.num_lags != lags:
            raise SpecError(
                f"{where}: baselines: {path}: data.num_lags={cfg.data.num_lags} but the base "
                f"config has {lags}; a yardstick is scored on the search's bins, so give it "
                f"num_lags {lags}"
            )
        for c, h, w in shapes:
            frames = clip_geometry(cfg).frames
            reason = check_feasible(cfg.model, (c, frames, h, w), num_lags=cfg.data.num_lags)
            if reason is not None:
                raise SpecError(
                    f"{where}: baselines: {path}: cannot take the study's {h}x{w} frames "
                    f"({c} channel(s), {cfg.data.num_lags} lags): {reason}"
                )


def _fewest_lags(spec: StudySpec) -> int:
    """The smallest ``data.num_lags`` a trial of the study can have: the base config's, or a
    smaller one the space can write (a file without a sample at it has none at any)."""
    lags = [int(spec.base_tree()["data"]["num_lags"])]
    for p in spec.space.values():
        if "data.num_lags" not in p.to:
            continue
        if p.kind == "categorical":
            lags += [int(c) for c in p.choices or [] if isinstance(c, int) and c >= 1]
        elif p.kind == "fixed" and isinstance(p.value, int):
            lags.append(p.value)
        elif p.kind == "int":
            lags.append(int(p.low or 1))
    return max(1, min(lags))


def check_data(spec: StudySpec) -> None:
    """Every session file of ``data.paths`` keeps the data contract: the checks of
    ``vivit-hpo data inspect`` (:func:`~vivit_hpo.data.validate_file`: NaN or negative counts,
    no bins, mismatched lengths, ...), and at least one block of the smallest ``num_lags`` a trial
    can have. Simulated data (``data.synth``) are written to the contract and not read.

    Raises:
        SpecError: the first problem, naming its file, and how many more there are.
    """
    if spec.data.paths is None:
        return
    from vivit_hpo.data import expand_paths, raise_problems, validate_file

    try:
        files = expand_paths(spec.data.paths)
        lags = _fewest_lags(spec)
        raise_problems(
            [line for f in files for line in validate_file(f, num_lags=lags)],
            " ".join(spec.data.paths),
        )
    except DataError as e:
        raise SpecError(f"data.paths: {e}") from e


def check_spec(spec: StudySpec, where: str = "spec") -> None:
    """The checks beyond the schema: base config, targets, sampler/pruner options, feasibility.

    A space with no valid configuration (every combination of its categorical values, or a
    sample of 3,000 when there are more than 20,000, is rejected by the run config or the model's
    feasibility check on the data's frame size) is an error naming ``space``.
    """
    from vivit_hpo.search.space import (
        enumerate_space,
        infeasible_reason,
        input_shapes,
        sample_random,
        space_size,
    )

    try:
        base = spec.base_tree()
    except ConfigError as e:
        raise SpecError(f"{where}: base: {e}".replace(": base: base:", ": base:")) from e
    _check_targets(spec, base, where)
    _check_sampler(spec, where)
    shapes = input_shapes(spec)
    _check_yardsticks(spec, shapes, where)
    size = space_size(spec.space)
    combos = (
        enumerate_space(spec.space)
        if size <= _MAX_ENUMERATED
        else (sample_random(spec.space, seed=i) for i in range(_SAMPLED))
    )
    reasons: dict[str, int] = {}
    for values in combos:
        reason = infeasible_reason(spec, base, values, shapes, memory_cap_bytes=None)
        if reason is None:
            return
        reasons[reason] = reasons.get(reason, 0) + 1
    common = max(reasons, key=reasons.__getitem__) if reasons else "no combination"
    raise SpecError(
        f"{where}: space: no valid configuration (most common reason: {common}); "
        "widen the choices or fix the base config"
    )
