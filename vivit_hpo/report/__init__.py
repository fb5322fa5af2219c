"""Seeing a study: the HTML report, the checkpoint analysis and optuna-dashboard.

Layers, from pure to I/O:

- :mod:`.snapshot`: a study copied once from the storage (:class:`StudySnapshot`);
- :mod:`.data` and :mod:`.analysis`: every figure's data, pure functions with their own tests;
- :mod:`.figures`: plotly drawing of that data; :mod:`.html`: one self-contained page;
- :mod:`.sections`: the report's sections (data -> figures, tables, notes);
- :mod:`.checkpoint`: arrays out of a trained run (readouts, attention maps);
- :mod:`.build`: writing reports, publishing them to optuna-dashboard, serving the dashboard.
"""

from __future__ import annotations

from vivit_hpo.report.build import (
    ReportResult,
    default_artifact_store_dir,
    open_artifact_store,
    publish_to_dashboard,
    serve_dashboard,
    study_data_paths,
    write_run_analysis,
    write_study_report,
)
from vivit_hpo.report.checkpoint import RunAnalysis, analyze_run
from vivit_hpo.report.snapshot import StudySnapshot, take_snapshot, trial_status

__all__ = [
    "ReportResult",
    "RunAnalysis",
    "StudySnapshot",
    "analyze_run",
    "default_artifact_store_dir",
    "open_artifact_store",
    "publish_to_dashboard",
    "serve_dashboard",
    "study_data_paths",
    "take_snapshot",
    "trial_status",
    "write_run_analysis",
    "write_study_report",
]
