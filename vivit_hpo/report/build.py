"""Writing reports and serving the dashboard: the outer I/O layer of ``vivit_hpo.report``.

- :func:`write_study_report` reads a study once, builds every section and writes one HTML file;
  with an artifact store it also uploads the file to the study so optuna-dashboard lists it.
- :func:`write_run_analysis` writes the receptive-field and attention figures of one run.
- :func:`serve_dashboard` runs optuna-dashboard on the study storage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage

from vivit_hpo import settings
from vivit_hpo._io import atomic_write_text
from vivit_hpo.errors import VivitHpoError
from vivit_hpo.report.checkpoint import RunAnalysis, analyze_run
from vivit_hpo.report.data import importance_info
from vivit_hpo.report.html import Section, render_page
from vivit_hpo.report.sections import analysis_sections, headline, study_sections
from vivit_hpo.report.snapshot import StudySnapshot, parse_oracle, take_snapshot
from vivit_hpo.search.record import TrialRecord

__all__ = [
    "DASHBOARD_SECTIONS",
    "ENV_ARTIFACT_STORE",
    "ReportResult",
    "default_artifact_store_dir",
    "open_artifact_store",
    "publish_to_dashboard",
    "serve_dashboard",
    "study_data_paths",
    "write_run_analysis",
    "write_study_report",
]

ENV_ARTIFACT_STORE = settings.ARTIFACT_STORE.name


def default_artifact_store_dir() -> Path:
    """``$VIVIT_HPO_ARTIFACT_STORE``, else ``<home>/storage/artifacts`` beside the embedded db
    (:data:`vivit_hpo.settings.ARTIFACT_STORE`)."""
    return settings.ARTIFACT_STORE.get()


def open_artifact_store(path: str | Path | None = None) -> FileSystemArtifactStore:
    """The file-system artifact store at ``path`` (default :func:`default_artifact_store_dir`)."""
    root = Path(path) if path is not None else default_artifact_store_dir()
    root.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(root)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_study_report` wrote, and the sections it built."""

    path: Path
    headline: str
    sections: tuple[Section, ...]
    best_run_dir: Path | None


def study_data_paths(snap: StudySnapshot) -> list[Path]:
    """The session files a study trained on, from its stored spec (empty when unknown): those
    of :meth:`~vivit_hpo.search.spec.StudySpec.data_paths` that are on this machine (for a
    simulated study, the folder its workers synthesised into, once it holds a session file).
    """
    if snap.spec_text is None:
        return []
    from vivit_hpo.search.spec import spec_from_text

    try:
        spec = spec_from_text(snap.spec_text)
        paths = spec.data_paths(snap.name)
    except VivitHpoError:
        return []
    if spec.data.paths is not None:
        return [p for p in paths if p.exists()]
    return [p for p in paths if p.is_dir() and any(p.glob("*.h5"))]


def _with_oracle(snap: StudySnapshot) -> StudySnapshot:
    """The snapshot with the oracle BPS of its simulated data folders (``oracle.json``)."""
    from vivit_hpo.data import oracle_bps

    oracle: dict[str, float] = {}
    test: dict[str, float] = {}
    for p in study_data_paths(snap):
        raw = oracle_bps(p)
        oracle.update(parse_oracle(raw))
        test.update(parse_oracle(raw, "test"))
    return replace(snap, oracle=oracle, oracle_test=test) if oracle or test else snap


def _best_run_dir(snap: StudySnapshot) -> Path | None:
    """The best trial's folder: where ``trial_dir`` puts it for a vivit-hpo study (on this
    machine's artifacts root), else the folder its ``trial_dir`` attribute names."""
    best = snap.best_trial()
    if best is None:
        return None
    if snap.spec_text is not None:
        from vivit_hpo.search.spec import spec_from_text
        from vivit_hpo.search.study import UID_ATTR, trial_dir

        try:
            spec = spec_from_text(snap.spec_text)
            uid = snap.user_attrs.get(UID_ATTR)
            folder = trial_dir(
                spec, snap.name, best.number, uid=uid if isinstance(uid, str) else None
            )
        except VivitHpoError:
            folder = None
        if folder is not None and folder.is_dir():
            return folder
    return TrialRecord.of(best).run_dir


def write_study_report(
    storage: str | BaseStorage,
    name: str,
    out: str | Path,
    *,
    compare: str | None = None,
    data_paths: Sequence[str | Path] | None = None,
    device: str = "cpu",
    analyze_best: bool = True,
) -> ReportResult:
    """Write the report of study ``name`` as one self-contained HTML file.

    Args:
        storage: the study storage (URL or opened storage).
        name: the study.
        out: the HTML file to write (its folder is created).
        compare: a second study (e.g. CNN baselines) in the same storage to compare with.
        data_paths: session files for the best trial's attention maps; default the study's own
            (:func:`study_data_paths`).
        device: where to run the best trial's model for its attention maps.
        analyze_best: include the best trial's checkpoint analysis when its run dir exists.

    Returns:
        A :class:`ReportResult` (see :func:`publish_to_dashboard` to show it in the dashboard).

    Raises:
        StorageError: the storage cannot be opened. StudyError: no such study (or compare
            study) in the storage.
    """
    from vivit_hpo.search.storage import get_storage

    storage = get_storage(storage)
    snap = _with_oracle(take_snapshot(storage, name))
    other = _with_oracle(take_snapshot(storage, compare)) if compare else None
    run_dir = _best_run_dir(snap)
    config_text = None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        config_text = (run_dir / "config.yaml").read_text()
    importance = importance_info(snap)
    sections = study_sections(
        snap, compare=other, best_config_text=config_text, importance=importance
    )
    sections.extend(_best_trial_sections(snap, run_dir, data_paths, device, analyze_best))
    out = Path(out)
    subtitle = headline(snap, importance)
    # Through a temporary file and a rename: a failure never leaves half a report, or none
    # where the last one was.
    atomic_write_text(out, render_page(f"vivit-hpo study report: {name}", sections, subtitle))
    return ReportResult(path=out, headline=subtitle, sections=tuple(sections), best_run_dir=run_dir)


def _best_trial_sections(
    snap: StudySnapshot,
    run_dir: Path | None,
    data_paths: Sequence[str | Path] | None,
    device: str,
    analyze_best: bool,
) -> list[Section]:
    best = snap.best_trial()
    title = "Best trial's model"
    if best is None:
        return [Section("best-model", title).note("No complete trial yet.")]
    if not analyze_best:
        return []
    if run_dir is None or not (run_dir / "checkpoints").is_dir():
        where = f"run dir {run_dir}" if run_dir else "no trial_dir user attribute"
        return [
            Section("best-model", title).note(
                f"Trial {best.number}'s checkpoint is not available here ({where}); run "
                "`vivit-hpo analyze RUN_DIR --data PATH` where it is."
            )
        ]
    paths = list(data_paths) if data_paths else study_data_paths(snap)
    analysis = analyze_run(run_dir, paths or None, device=device)
    return analysis_sections(
        analysis.rf,
        analysis.attention,
        title_prefix=f"Best trial ({best.number}): ",
        notes=_analysis_notes(analysis),
    )


def _analysis_notes(a: RunAnalysis) -> tuple[str, ...]:
    notes = [f"Run dir: {a.run_dir} ({a.core_kind} core)."]
    if a.rf is not None:
        for s in a.rf.sessions:
            if s.median_error_px is not None:
                notes.append(
                    f"{s.session}: median distance between readout and true RF centres "
                    f"{s.median_error_px:.1f} px (frame {s.width}x{s.height})."
                )
    if a.attention is not None:
        notes.append(
            f"Attention averaged over {a.attention_samples} validation samples of session "
            f"{a.attention_session}."
        )
    return (*notes, *a.notes)


# Sections whose figures optuna-dashboard does not draw itself; they go to its study page.
DASHBOARD_SECTIONS = ("curves", "cost", "sessions", "ablation", "baseline", "receptive-fields")


def publish_to_dashboard(
    storage: str | BaseStorage,
    name: str,
    report: ReportResult,
    artifact_dir: str | Path | None = None,
) -> tuple[str, list[str]]:
    """Make a written report visible in optuna-dashboard.

    Uploads the HTML file as a study artifact (to the file-system store at ``artifact_dir``,
    which ``vivit-hpo dashboard`` serves) and saves the figures of :data:`DASHBOARD_SECTIONS`
    as the study's plotly graph objects, under fixed ids so that a new report replaces them.

    Returns:
        (artifact id, graph object ids).
    """
    from optuna_dashboard import save_plotly_graph_object

    from vivit_hpo.search.study import load_study

    store = open_artifact_store(artifact_dir)
    study = load_study(storage, name, require_spec=False)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store,
        file_path=str(report.path),
        study_or_trial=study,
        mimetype="text/html",
    )
    ids = []
    for sec in report.sections:
        if sec.anchor not in DASHBOARD_SECTIONS:
            continue
        figs = [b for b in sec.blocks if isinstance(b, go.Figure)]
        for i, fig in enumerate(figs):
            gid = f"vivit-hpo-{sec.anchor}-{i}"
            ids.append(save_plotly_graph_object(study, fig, graph_object_id=gid))
    return artifact_id, ids


def write_run_analysis(
    run_dir: str | Path,
    data_paths: Sequence[str | Path] | None,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    session: str | None = None,
    num_samples: int = 64,
) -> tuple[Path, Path]:
    """Write ``out_dir/analysis.html`` and ``out_dir/analysis.json`` for a trained run.

    Returns:
        (html path, json path).
    """
    analysis = analyze_run(
        run_dir, data_paths, device=device, session=session, num_samples=num_samples
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = analysis_sections(analysis.rf, analysis.attention, notes=_analysis_notes(analysis))
    html_path, json_path = out / "analysis.html", out / "analysis.json"
    # Atomic, as the study report: a failure never leaves half a file where the last one was.
    atomic_write_text(
        html_path, render_page(f"vivit-hpo run analysis: {Path(run_dir).name}", sections)
    )
    atomic_write_text(json_path, json.dumps(analysis.to_dict(), indent=1))
    return html_path, json_path


def serve_dashboard(
    storage: BaseStorage, host: str, port: int, artifact_dir: str | Path | None = None
) -> None:
    """Serve optuna-dashboard on ``storage`` at ``host:port`` until interrupted (blocking).

    Study and trial artifacts (uploaded reports) are served from ``artifact_dir``.
    """
    import optuna_dashboard

    optuna_dashboard.run_server(
        storage, host=host, port=port, artifact_store=open_artifact_store(artifact_dir)
    )
