"""The Python API: what the CLI does, as functions that return values and print nothing.

Import it through the package (``import vivit_hpo as vh``), which loads this module (and torch,
optuna) only when one of its names is first used::

    import vivit_hpo as vh

    vh.create_study("studies/quickstart.yaml", name="qs", storage="sqlite:///qs.db")
    vh.run_worker("qs", storage="sqlite:///qs.db", device="cpu")
    print(vh.load_study("qs", storage="sqlite:///qs.db").best_trial.params)

Unlike the CLI, nothing here installs signal handlers or prints hints unless asked; errors
are the project's own (:class:`~vivit_hpo.errors.VivitHpoError`), raised, not exit codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from vivit_hpo.config import RunConfig, load_run_config, parse_run_config
from vivit_hpo.infra import DEFAULT_MAX_INFRA_ERRORS
from vivit_hpo.search import study as _study
from vivit_hpo.search import worker as _worker
from vivit_hpo.search.spec import StudySpec, check_study_name, load_spec, parse_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.training import EpochReport
from vivit_hpo.training.run import load_run_sessions, train_run

if TYPE_CHECKING:
    from rich.console import Console

    from vivit_hpo.search.coordinator import RunEvent, RunResult
    from vivit_hpo.search.worker import WorkerSummary

__all__ = ["TrainResult", "create_study", "load_study", "run_study", "run_worker", "train"]


def _spec(spec: StudySpec | str | Path | Mapping[str, Any]) -> StudySpec:
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    return load_spec(spec)


def create_study(
    spec: StudySpec | str | Path | Mapping[str, Any],
    name: str,
    *,
    storage: str | None = None,
    baseline: bool | None = None,
) -> optuna.Study:
    """Create study ``name`` (``vivit-hpo study create``): simulated data are written now.

    Args:
        spec: a parsed spec, the path of a spec YAML, or its tree (paths in a tree are taken
            from the working folder).
        name: the study's name (a plain folder name).
        storage: the storage URL; None: ``$VIVIT_HPO_STORAGE`` or the embedded default.
        baseline: enqueue the base config as the first trial; None: as the spec says.

    Returns:
        The new study.

    Raises:
        SpecError: a bad spec. StudyError: the name is taken. StorageError: bad URL.
    """
    check_study_name(name)
    parsed = _spec(spec)
    if baseline is not None:
        parsed = parsed.model_copy(update={"baseline": baseline})
    return _study.create_study(open_storage(storage), name, parsed)


def load_study(name: str, *, storage: str | None = None) -> optuna.Study:
    """Study ``name`` as Optuna holds it (``.trials``, ``.best_trial``, ``.trials_dataframe()``).

    Raises:
        StudyError: no such study, or one not made by vivit-hpo. StorageError: bad URL.
    """
    return _study.load_study(storage, name)


def run_worker(
    name: str,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    device: str = "auto",
    install_signals: bool = False,
    max_infra_errors: int = DEFAULT_MAX_INFRA_ERRORS,
    finish_by: float | None = None,
) -> WorkerSummary:
    """Run trials of study ``name`` in this process until its budget (or ``n_trials``) is spent.

    See :func:`vivit_hpo.search.worker.run_worker`; ``install_signals`` (off here, on in
    ``vivit-hpo worker``) turns SIGINT, SIGTERM and SIGHUP into a clean stop of the process.
    Ctrl-C stops it either way: the running trial is re-enqueued to resume from its checkpoint.

    Returns:
        What this worker ran and why it stopped (``stopped_by``).
    """
    return _worker.run_worker(
        name,
        storage,
        n_trials,
        device,
        install_signals=install_signals,
        max_infra_errors=max_infra_errors,
        finish_by=finish_by,
    )


def run_study(
    name: str,
    spec: str | Path | None = None,
    *,
    storage: str | None = None,
    devices: Sequence[str] = ("cpu",),
    console: Console | None = None,
    baseline: bool = True,
    max_infra_errors: int = DEFAULT_MAX_INFRA_ERRORS,
) -> RunResult:
    """Create (from the spec file ``spec``) or load study ``name`` and run one worker process
    per entry of ``devices`` until it is done (``vivit-hpo run``).

    ``console``: where the live table and the closing lines go (None: nowhere). The process's
    SIGINT, SIGTERM and SIGHUP stop the workers while it runs (their trials resume later).

    Returns:
        The exit code the CLI would end with (0: done) and the final counts.
    """
    from vivit_hpo.search.coordinator import run_study as _run_study

    def run(progress: Callable[[RunEvent], None] | None) -> RunResult:
        return _run_study(
            name,
            None if spec is None else Path(spec),
            storage,
            devices=devices,
            progress=progress,
            baseline=baseline,
            max_infra_errors=max_infra_errors,
        )

    if console is None:
        return run(None)  # silent, and rich stays unimported
    from vivit_hpo._live import LiveView

    with LiveView(console) as view:
        return run(view)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` ran: its run folder (:func:`~vivit_hpo.training.load_run` reads
    it back), the best epoch, every epoch's report and whether early stopping ended it."""

    run_dir: Path
    best_epoch: int | None
    reports: list[EpochReport]
    stopped_early: bool


def train(
    cfg: RunConfig | str | Path | Mapping[str, Any] | None,
    data: Sequence[str | Path],
    *,
    out: str | Path,
    device: str = "auto",
) -> TrainResult:
    """Train one model on the session files ``data`` into the run folder ``out``
    (``vivit-hpo train``; a folder that holds a run resumes it).

    Args:
        cfg: a run config, the path of its YAML, its tree, or None (the defaults).
        data: session files and folders of them.
        out: the run folder (config, checkpoints, ``metrics.json``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:i``.

    Raises:
        ConfigError: a bad config, or data without training or validation samples.
        DataError: a session file breaks the data contract.
    """
    if isinstance(cfg, RunConfig):
        run_cfg = cfg
    elif isinstance(cfg, Mapping):
        run_cfg = parse_run_config(cfg)
    else:
        run_cfg = load_run_config(cfg)
    sessions = load_run_sessions(data, run_cfg)
    # Training alone, as before: the CLI's test scoring and summary.json are not asked for here.
    run = train_run(run_cfg, sessions, out, device=device, paths=data, score=False)
    return TrainResult(run.run_dir, run.best_epoch, run.reports, run.stopped_early)
