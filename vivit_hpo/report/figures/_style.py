"""What every figure of the report shares: the status colours, the template and the layout."""

from __future__ import annotations

import plotly.graph_objects as go

STATUS_COLORS = {
    "complete": "#1f77b4",
    "pruned": "#ff7f0e",
    "infeasible": "#9467bd",
    "failed": "#d62728",
    "running": "#2ca02c",
    "waiting": "#7f7f7f",
}
_TEMPLATE = "plotly_white"
# The objective's short name: "BPS" for spike counts, the Poisson gain's name for calcium
# traces (:func:`~vivit_hpo.metrics.score_label`); every figure of it takes it as ``metric``.
_BPS = "BPS"


def _objective(metric: str) -> str:
    return f"validation {metric}"


def _layout(fig: go.Figure, title: str, height: int = 420, top: int = 80) -> go.Figure:
    fig.update_layout(
        title={"text": title, "y": 1.0, "yanchor": "top", "pad": {"t": 12}},
        template=_TEMPLATE,
        height=height,
        margin={"l": 60, "r": 20, "t": top, "b": 50},
    )
    return fig
