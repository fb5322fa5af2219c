"""Plotly drawing of the report's figure data: a thin layer, no computation of its own.

Every ``*_figure`` takes one dataclass of :mod:`vivit_hpo.report.data` or
:mod:`vivit_hpo.report.analysis` and returns a :class:`plotly.graph_objects.Figure`.

- :mod:`.study`: the study's figures, from :mod:`vivit_hpo.report.data`;
- :mod:`.analysis`: a trained run's receptive fields and attention, from
  :mod:`vivit_hpo.report.analysis`;
- :mod:`._style`: the status colours and the layout they share.

Every name is re-exported here.
"""

from __future__ import annotations

from vivit_hpo.report.figures._style import STATUS_COLORS
from vivit_hpo.report.figures.analysis import (
    attention_entropy_figure,
    receptive_field_figure,
    register_figure,
    spatial_attention_figure,
    temporal_attention_figure,
)
from vivit_hpo.report.figures.study import (
    ablation_figure,
    baseline_figure,
    cost_figure,
    curves_figure,
    history_figure,
    importance_figure,
    parallel_figure,
    sessions_figure,
)

__all__ = [
    "STATUS_COLORS",
    "ablation_figure",
    "attention_entropy_figure",
    "baseline_figure",
    "cost_figure",
    "curves_figure",
    "history_figure",
    "importance_figure",
    "parallel_figure",
    "receptive_field_figure",
    "register_figure",
    "sessions_figure",
    "spatial_attention_figure",
    "temporal_attention_figure",
]
