"""The study spec's schema: the pydantic models of a spec's sections (see
:mod:`vivit_hpo.search.spec` for the file format), and the trial budget they give.

Pure data and its own validation; it imports nothing from the rest of ``search/``, so that
the search space and the sampler and pruner factory, which the spec's deep checks call, import
it without importing the spec loader back.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vivit_hpo import settings
from vivit_hpo.config import apply_overrides, parse_run_config
from vivit_hpo.errors import ArtifactPathError, SpecError

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
    "Scalar",
    "StudySpec",
    "SynthSpec",
    "check_study_name",
    "effective_n_trials",
    "grid_size",
    "objective_name",
    "study_n_trials",
]


_STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_study_name(name: str) -> str:
    """``name`` if it is a plain folder name: letters, digits, ``-``, ``_`` and ``.``, not
    starting with ``.`` (so never ``.``, ``..``, a path or a hidden folder).

    Checked when a study is created and whenever a name comes back from the database, because
    the name is the study's folder under the artifacts root.

    Raises:
        ArtifactPathError: any other name.
    """
    if not _STUDY_NAME.fullmatch(name):
        raise ArtifactPathError(
            f"study name {name!r}: use letters, digits, '-', '_' and '.', not starting with "
            "'.' (e.g. vivit-small.v2)"
        )
    return name


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Scalar = bool | int | float | str


class SynthSpec(_Frozen):
    """A simulated population (``vivit_hpo.data.synthesize``), written once per study and
    recipe (:meth:`StudySpec.synth_folder`).

    ``neurons``, ``frames``, ``size`` and ``behavior`` take one value for every session or a
    list of one value per session (sessions of different shapes, as real recordings are).
    """

    sessions: int = Field(1, ge=1)
    neurons: int | list[int] = 96
    frames: int | list[int] = 48000
    size: tuple[int, int] | list[tuple[int, int]] = (36, 36)
    behavior: int | list[int] = 4
    frame_rate: float = Field(60.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _per_session(self) -> SynthSpec:
        k = self.sessions
        for name, low in (("neurons", 1), ("frames", 100), ("behavior", 0), ("size", 1)):
            v = getattr(self, name)
            if isinstance(v, list) and len(v) != k:
                raise ValueError(f"{name}: {len(v)} values for {k} sessions; give one per session")
            values = v if isinstance(v, list) else [v]
            if name == "size":
                values = [min(hw) for hw in values]
            if min(values) < low:
                raise ValueError(f"{name}: every value must be >= {low}")
        return self


class DataSpec(_Frozen):
    """Session files (or folders of them), or a simulator recipe: exactly one of the two."""

    paths: list[str] | None = None
    synth: SynthSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> DataSpec:
        if (self.paths is None) == (self.synth is None):
            raise ValueError("give exactly one of data.paths (session files) or data.synth")
        if self.paths is not None and not self.paths:
            raise ValueError("data.paths is empty; list session files or folders")
        return self


class BaseSpec(_Frozen):
    """The run config of every trial before the search space is applied."""

    config: dict[str, Any] | str | None = None  # a RunConfig mapping or a run-config YAML path
    overrides: list[str] = Field(default_factory=list)  # "key=value" as for --set


class ParamSpec(_Frozen):
    """One search-space parameter (see :mod:`vivit_hpo.search.spec`)."""

    to: list[str]
    type: Literal["categorical", "int", "float", "fixed"] | None = None  # None: inferred
    choices: list[Scalar] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    value: Any = None
    le: str | None = None
    when: dict[str, list[Scalar]] | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if not self.to:
            raise ValueError("to: name at least one run-config key, e.g. to: train.lr")
        kind = self.kind
        if kind == "categorical":
            if not self.choices:
                raise ValueError("choices is empty; give at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
        elif kind in ("int", "float"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {kind} range needs low and high")
            if self.low > self.high:
                raise ValueError(f"empty range: low={self.low} > high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"a log range needs low > 0, got low={self.low}")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
            if kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("an int range needs integer low and high")
        elif self.value is None:
            raise ValueError("a fixed parameter needs value")
        if self.le is not None and kind not in ("categorical", "int"):
            raise ValueError("le applies to categorical or int parameters")
        return self

    @property
    def kind(self) -> str:
        if self.type is not None:
            return self.type
        if self.choices is not None:
            return "categorical"
        if self.value is not None:
            return "fixed"
        return "float"


# The roadmap's search space (Phase 5.1), plus the optimiser settings. Tubelets are cubes, as in
# the roadmap's [4, 4, 4]: "patch p" is p frames x p x p pixels and "stride s" applies to all
# three axes; a spec that wants another temporal size adds a parameter with
# `to: model.core.kernel_size[0]` after `patch`. "blocks" sets both the spatial and the temporal
# stack (the roadmap's "6+6 blocks").
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "patch": {"choices": [2, 4, 8], "to": "model.core.kernel_size"},
    "stride": {"choices": [2, 4, 8], "le": "patch", "to": "model.core.stride"},
    "embed_dim": {"choices": [192, 384, 768], "to": "model.core.embed_dim"},
    "blocks": {
        "choices": [4, 6, 8, 12],
        "to": ["model.core.num_spatial_blocks", "model.core.num_temporal_blocks"],
    },
    "heads": {"choices": [4, 6, 8, 12], "to": "model.core.num_heads"},
    "mlp_ratio": {"choices": [2, 4, 8], "to": "model.core.mlp_ratio"},
    "dropout": {"choices": [0.0, 0.1, 0.2], "to": "model.core.dropout"},
    "lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True, "to": "train.lr"},
    "weight_decay": {"low": 1.0e-3, "high": 0.3, "log": True, "to": "train.weight_decay"},
    "readout_lr_ratio": {"low": 1.0, "high": 30.0, "log": True, "to": "train.readout_lr_ratio"},
    "batch_size": {"choices": [16, 32, 64], "to": "train.batch_size"},
}


class SamplerSpec(_Frozen):
    name: Literal["tpe", "random", "grid", "gp", "cmaes"] = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the sampler


class PrunerSpec(_Frozen):
    name: Literal["hyperband", "median", "successive_halving", "patient", "none"] = "hyperband"
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the pruner


_OBJECTIVE_ERROR = "objective must be 'bps' or 'corr'"


class ObjectiveSpec(_Frozen):
    """What the study maximises: the mean over sessions of the validation BPS (``bps``, the
    default) or of the mean per-unit correlation (``corr``, for calcium traces). Written
    ``objective: corr`` (or the older ``{metric: val_bps, direction: maximize}``); every
    trial's ``train.objective`` is set to it, so the pruner, early stopping, the best
    checkpoint and the trial's value all follow it."""

    metric: Literal["val_bps", "val_corr"] = "val_bps"
    direction: Literal["maximize"] = "maximize"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in ("bps", "corr"):
                raise ValueError(_OBJECTIVE_ERROR)
            return {"metric": f"val_{v}"}
        if isinstance(v, dict) and v.get("metric", "val_bps") not in ("val_bps", "val_corr"):
            raise ValueError(f"{_OBJECTIVE_ERROR}, got metric {v.get('metric')!r}")
        if not isinstance(v, dict):
            raise ValueError(_OBJECTIVE_ERROR)
        return v

    @property
    def name(self) -> str:
        """``bps`` or ``corr`` (:data:`~vivit_hpo.metrics.OBJECTIVES`)."""
        return self.metric.removeprefix("val_")


def objective_name(raw: Any) -> str:
    """``bps`` or ``corr`` from a stored spec's ``objective`` entry as written (``corr``, or
    ``{metric: val_corr}``); ``bps`` for anything else (a spec from before the choice)."""
    if isinstance(raw, dict):
        raw = str(raw.get("metric", "")).removeprefix("val_")
    return "corr" if raw == "corr" else "bps"


class BudgetSpec(_Frozen):
    n_trials: int = Field(50, ge=1)
    # Per `run`/`worker` process: no new trial starts after it; `run` then stops its workers.
    timeout_minutes: float | None = Field(None, gt=0)


class HeartbeatSpec(_Frozen):
    interval_s: int = Field(20, ge=1)
    grace_s: int = Field(90, ge=2)  # a trial without a heartbeat for this long is failed
    # How often one logical trial is retried, per cause: its heartbeat lost (its worker died or
    # lost the database), the node's error (vivit_hpo.infra; a config that always raises what
    # looks like one must not loop for ever), or its worker stopped by a signal (preemption:
    # cheap, and no fault of the trial's, so many more). Then it ends FAIL, the reason saying so.
    max_retry: int = Field(3, ge=0)
    max_infra_retries: int = Field(3, ge=0)
    max_interrupt_retries: int = Field(20, ge=0)
    # A trial whose training completed no step (and no epoch) for this long is stalled (a
    # CUDA hang, a deadlocked data loader): its worker stops vouching for it, re-enqueues it as
    # the node's fault and stops. Generous: it must cover the first step's compile, a whole
    # validation pass and a checkpoint write.
    stall_s: int = Field(1800, ge=1)

    def retry_cap(self, cause: str) -> int:
        """The cap for a retry cause (:data:`~vivit_hpo.search.record.RetryCause`)."""
        caps = {
            "heartbeat": self.max_retry,
            "infrastructure": self.max_infra_retries,
            "interrupt": self.max_interrupt_retries,
        }
        return caps[cause]

    @model_validator(mode="after")
    def _grace(self) -> HeartbeatSpec:
        # A worker gives its trial up after grace - interval seconds without a beat written
        # (storage.Heartbeat): at 3x, that is two missed beats, so one slow beat never does it.
        if self.grace_s < 3 * self.interval_s:
            raise ValueError(
                f"grace_s={self.grace_s} must be at least 3 x interval_s={self.interval_s}"
            )
        return self


class FeasibilitySpec(_Frozen):
    """The cheap memory check before training: estimated bytes vs the device's."""

    max_memory_gb: float | None = Field(None, gt=0)  # None: the device's (CPU: physical RAM)
    memory_fraction: float = Field(0.9, gt=0, le=1)


class ArtifactSpec(_Frozen):
    dir: str | None = None  # None: $VIVIT_HPO_HOME/artifacts (or ./artifacts)
    keep_best: int = Field(3, ge=0)  # trials whose checkpoints survive the end of the study


class StudySpec(_Frozen):
    description: str = ""
    data: DataSpec
    base: BaseSpec = Field(default_factory=BaseSpec)
    space: dict[str, ParamSpec] = Field(
        default_factory=lambda: {k: ParamSpec.model_validate(v) for k, v in DEFAULT_SPACE.items()}
    )
    epochs: int = Field(20, ge=1)
    baseline: bool = True  # enqueue the base config as the first trial (not for a grid)
    # Run-config files of the yardsticks (a lab's own models): each is trained once, as a
    # labelled trial beside the search (see yardstick_trees); absolute once loaded.
    baselines: list[str] = Field(default_factory=list)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    heartbeat: HeartbeatSpec = Field(default_factory=HeartbeatSpec)
    feasibility: FeasibilitySpec = Field(default_factory=FeasibilitySpec)
    artifacts: ArtifactSpec = Field(default_factory=ArtifactSpec)

    @field_validator("space")
    @classmethod
    def _space_refs(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not space:
            raise ValueError("the space is empty; omit `space` for the roadmap's default")
        seen: dict[str, ParamSpec] = {}
        for name, p in space.items():
            for ref in [p.le, *(p.when or {})]:
                if ref is not None and ref not in seen:
                    raise ValueError(
                        f"{name} refers to {ref!r}, which is not a parameter listed before it"
                    )
            if p.le is not None and seen[p.le].kind not in ("categorical", "int", "fixed"):
                raise ValueError(f"{name}: le={p.le!r} must name a categorical or int parameter")
            if "|" in name:
                raise ValueError(f"{name}: '|' is reserved in parameter names")
            seen[name] = p
        return space

    @field_validator("baselines")
    @classmethod
    def _distinct_stems(cls, paths: list[str]) -> list[str]:
        stems: dict[str, str] = {}
        for path in paths:
            stem = Path(path).stem
            if stem in stems:
                raise ValueError(
                    f"{path} and {stems[stem]} have the same name {stem!r}; a yardstick is "
                    "named by its file's stem: rename one"
                )
            stems[stem] = path
        return paths

    def finish_tree(self, tree: dict[str, Any], where: str) -> dict[str, Any]:
        """A run-config mapping made a trial's: parsed (every key present), with the per-trial
        epoch budget in ``train.epochs`` and full-state checkpoints only at the end unless the
        tree sets ``train.checkpoint_every``.

        Raises:
            ConfigError: not a valid run config (one line naming ``where``).
        """
        explicit_ckpt = "checkpoint_every" in tree.get("train", {})
        out = parse_run_config(tree, where).to_dict()
        out["train"]["epochs"] = self.epochs
        out["train"]["objective"] = self.objective.name
        if not explicit_ckpt:
            out["train"]["checkpoint_every"] = self.epochs
        return out

    def base_tree(self) -> dict[str, Any]:
        """The resolved base run config as a full mapping (every key present).

        The per-trial epoch budget is written to ``train.epochs``; full-state checkpoints
        (``epochNNN.pt``) are kept only at the end of a trial unless the base config sets
        ``train.checkpoint_every`` (``last.pt`` is written every epoch regardless).
        """
        cfg = self.base.config
        if not isinstance(cfg, dict) and cfg is not None:
            raise SpecError(f"base.config = {cfg!r}: not resolved; load the spec with load_spec")
        return self.finish_tree(apply_overrides(cfg or {}, self.base.overrides), "base")

    def artifacts_root(self) -> Path:
        """The artifacts root, resolved: ``$VIVIT_HPO_ARTIFACTS`` (on a machine that mounts the
        shared artifact folder somewhere else: a container, another node;
        :data:`vivit_hpo.settings.ARTIFACTS`), else the stored ``artifacts.dir``, else
        ``$VIVIT_HPO_HOME/artifacts``. The one place that says where a study's artifacts live:
        its workers, its reports and its deletion all go through it."""
        root = settings.ARTIFACTS.get()
        if root is None and self.artifacts.dir:
            root = Path(self.artifacts.dir)
        return (root or settings.HOME.get() / "artifacts").expanduser().resolve()

    def artifact_path(self, study_name: str, *parts: str) -> Path:
        """``<artifacts>/<study>/<parts...>``, resolved: the one place that makes a path the
        service creates, writes or deletes (the study folder, trial folders, the data folder).

        Raises:
            ArtifactPathError: a study name that is not a plain folder name, or a path that
                resolves outside the study's folder under the artifacts root (a symlink, a
                part with ``..``), whatever the database says.
        """
        root = self.artifacts_root()
        study = (root / check_study_name(study_name)).resolve()
        path = study.joinpath(*parts).resolve()
        if study.parent != root or not path.is_relative_to(study):
            raise ArtifactPathError(
                f"study {study_name!r}: {root / study_name / Path(*parts)} resolves to {path}, "
                f"outside {root / study_name}; remove the symlink or fix artifacts.dir"
            )
        return path

    def study_dir(self, study_name: str) -> Path:
        """Where the study's trials and materialised data live: ``<artifacts>/<study>``."""
        return self.artifact_path(study_name)

    def synth_recipe(self) -> dict[str, Any]:
        """What the simulated sessions are made from: ``data.synth`` and the base config's
        ``num_lags`` (the oracle is scored at it). Raises SpecError for a spec of session files.
        """
        if self.data.synth is None:
            raise SpecError("data: session files (data.paths), not a simulator recipe")
        return {
            "synth": self.data.synth.model_dump(mode="json"),
            "num_lags": self.base_tree()["data"]["num_lags"],
        }

    def synth_folder(self) -> str:
        """``data-<hash of the recipe>``: the folder name of the simulated sessions, one per
        :meth:`synth_recipe`, so that data of one recipe are never taken for another's."""
        text = json.dumps(self.synth_recipe(), sort_keys=True, separators=(",", ":"))
        return f"data-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def data_paths(self, study_name: str) -> list[Path]:
        """The study's session paths: ``data.paths``, or for a simulator recipe the folder it is
        materialised into, ``<artifacts>/<study>/data-<hash of the recipe>``
        (:meth:`synth_folder`). The one place that says where a study's data are: every
        worker, on any machine, computes the same folder from the spec and the name.

        Raises:
            ArtifactPathError: as :meth:`artifact_path`.
        """
        if self.data.paths is not None:
            return [Path(p) for p in self.data.paths]
        return [self.artifact_path(study_name, self.synth_folder())]


def grid_size(spec: StudySpec) -> int | None:
    """Number of grid points for the grid sampler (None for other samplers)."""
    if spec.sampler.name != "grid":
        return None
    n = 1
    for p in spec.space.values():
        if p.kind == "categorical":
            n *= len(p.choices or [])
    return n


def effective_n_trials(spec: StudySpec) -> int:
    """The study's trial budget; a grid study never runs more trials than it has points."""
    g = grid_size(spec)
    return min(spec.budget.n_trials, g) if g is not None else spec.budget.n_trials


def study_n_trials(spec: StudySpec) -> int:
    """The study's trials in all: the search's (:func:`effective_n_trials`) and one per
    yardstick (``baselines``), which the search's budget does not pay for."""
    return effective_n_trials(spec) + len(spec.baselines)
