"""Plotly drawing of the report's figure data: a thin layer, no computation of its own.

Every ``*_figure`` takes one dataclass of :mod:`vivit_hpo.report.data` or
:mod:`vivit_hpo.report.analysis` and returns a :class:`plotly.graph_objects.Figure`.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vivit_hpo.report.analysis import AttentionInfo, ReceptiveFieldInfo
from vivit_hpo.report.data import (
    AblationInfo,
    BaselineInfo,
    CostInfo,
    CurvesInfo,
    HistoryInfo,
    ImportanceInfo,
    ParallelInfo,
    SessionsInfo,
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


def _square_cells(fig: go.Figure, rows: int, cols: int) -> None:
    """Equal x and y units in every subplot (heatmap cells square), y downwards like an image."""
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c + 1
            fig.update_yaxes(
                scaleanchor="x" if k == 1 else f"x{k}",
                constrain="domain",
                autorange="reversed",
                row=r + 1,
                col=c + 1,
            )
            fig.update_xaxes(constrain="domain", row=r + 1, col=c + 1)


def history_figure(info: HistoryInfo, metric: str = _BPS) -> go.Figure:
    """Objective of each complete trial, and the best so far as a step line."""
    fig = go.Figure()
    fig.add_scatter(
        x=info.numbers,
        y=info.values,
        mode="markers",
        name="complete trial",
        marker={"color": STATUS_COLORS["complete"], "size": 8},
        hovertemplate=f"trial %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>",
    )
    fig.add_scatter(
        x=info.numbers,
        y=info.best_so_far,
        mode="lines",
        line={"shape": "hv", "color": "#d62728"},
        name="best so far",
    )
    fig.update_xaxes(title="trial number")
    fig.update_yaxes(title=_objective(metric))
    return _layout(fig, "Optimisation history")


def curves_figure(info: CurvesInfo, metric: str = _BPS) -> go.Figure:
    """Best validation BPS so far per epoch of every trial, coloured by what the trial ended as.

    A pruned trial's curve ends with an ``x`` at the epoch where the pruner stopped it.
    """
    fig = go.Figure()
    shown: set[str] = set()
    for c in info.curves:
        color = STATUS_COLORS.get(c.status, "#7f7f7f")
        fig.add_scatter(
            x=c.epochs,
            y=c.values,
            mode="lines+markers",
            line={"color": color, "width": 1.5},
            marker={"size": 4},
            opacity=0.8,
            name=c.status,
            legendgroup=c.status,
            showlegend=c.status not in shown,
            hovertemplate=f"trial {c.number} ({c.status})<br>epoch %{{x}}<br>{metric} %{{y:.4f}}"
            "<extra></extra>",
        )
        shown.add(c.status)
        if c.status == "pruned":
            fig.add_scatter(
                x=[c.epochs[-1]],
                y=[c.values[-1]],
                mode="markers",
                marker={"symbol": "x", "size": 10, "color": color},
                legendgroup="pruned",
                showlegend=False,
                hoverinfo="skip",
            )
    fig.update_xaxes(title="epoch", dtick=1)
    fig.update_yaxes(title=_objective(metric))
    title = f"Best validation {metric} so far per epoch (x: pruned there)"
    return _layout(fig, title, height=460)


def parallel_figure(info: ParallelInfo, metric: str = _BPS) -> go.Figure:
    """Parallel coordinates of the complete trials' parameters, coloured by the objective."""
    assert info.objective is not None, "parallel_figure needs at least one complete trial"
    dims = []
    for d in (*info.dims, info.objective):
        dim: dict[str, object] = {"label": d.label, "values": list(d.values)}
        if d.tickvals is not None:
            dim["tickvals"] = list(d.tickvals)
            dim["ticktext"] = list(d.ticktext or ())
        dims.append(dim)
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": list(info.objective.values),
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": metric}},
            },
            dimensions=dims,
        )
    )
    return _layout(fig, "Parallel coordinates of complete trials", height=500, top=120)


def importance_figure(info: ImportanceInfo) -> go.Figure:
    """Horizontal bars of the hyperparameter importances, most important on top."""
    names = list(info.importances)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[info.importances[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": "#1f77b4"},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title=f"importance ({info.evaluator}, {info.num_trials} trials)")
    return _layout(fig, "Hyperparameter importances", height=max(300, 40 + 28 * len(names)))


def cost_figure(info: CostInfo, metric: str = _BPS) -> go.Figure:
    """BPS against each cost, the Pareto front of good and cheap models drawn as a line."""
    n = len(info.panels)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[p.label for p in info.panels])
    for i, p in enumerate(info.panels, start=1):
        on = [j for j, f in enumerate(p.on_front) if f]
        off = [j for j, f in enumerate(p.on_front) if not f]
        text = [f"trial {k}" for k in p.numbers]
        fig.add_scatter(
            x=[p.costs[j] for j in off],
            y=[p.values[j] for j in off],
            text=[text[j] for j in off],
            mode="markers",
            marker={"color": "#9ecae1", "size": 7},
            name="trial",
            legendgroup="trial",
            showlegend=i == 1,
            row=1,
            col=i,
        )
        front = sorted(on, key=lambda j: p.costs[j])
        fig.add_scatter(
            x=[p.costs[j] for j in front],
            y=[p.values[j] for j in front],
            text=[text[j] for j in front],
            mode="lines+markers",
            line={"shape": "hv" if p.attr != "samples_per_s" else "vh", "color": "#d62728"},
            marker={"size": 9},
            name="Pareto front",
            legendgroup="front",
            showlegend=i == 1,
            row=1,
            col=i,
        )
        fig.update_xaxes(type="log" if p.log_x else "linear", row=1, col=i)
    fig.update_yaxes(title=_objective(metric), row=1, col=1)
    return _layout(fig, f"Validation {metric} against cost", height=420)


def sessions_figure(info: SessionsInfo, metric: str = _BPS) -> go.Figure:
    """Each top trial's BPS per session as markers (one column per session, readable for tens
    of sessions), the oracle as black dashes."""
    fig = go.Figure()
    for number, row in zip(info.numbers, info.bps, strict=True):
        fig.add_scatter(
            x=list(info.sessions),
            y=[None if math.isnan(v) else v for v in row],
            mode="markers",
            marker={"size": 9},
            name=f"trial {number}",
        )
    if any(o is not None for o in info.oracle):
        fig.add_scatter(
            x=list(info.sessions),
            y=list(info.oracle),
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 22, "line": {"width": 3}, "color": "black"},
            name="oracle (true rates)",
        )
    fig.update_xaxes(
        title="session", type="category", tickangle=-45 if len(info.sessions) > 8 else 0
    )
    fig.update_yaxes(title=_objective(metric))
    return _layout(fig, f"Per-session validation {metric} of the top trials")


def ablation_figure(info: AblationInfo, metric: str = _BPS) -> go.Figure:
    """One panel per factor: mean BPS per level with the spread over seeds as error bars."""
    n = len(info.factors)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(info.factors))
    for i, factor in enumerate(info.factors):
        r, c = divmod(i, cols)
        levels = [row for row in info.rows if row.factor == factor]
        fig.add_scatter(
            x=[row.level for row in levels],
            y=[row.mean for row in levels],
            error_y={"type": "data", "array": [row.std for row in levels], "visible": True},
            mode="markers+lines",
            marker={"size": 9},
            name=factor,
            showlegend=False,
            row=r + 1,
            col=c + 1,
        )
        fig.update_xaxes(type="category", row=r + 1, col=c + 1)
    fig.update_yaxes(title=_objective(metric), col=1)
    spread = f"± s.d. over {info.seed_param}" if info.seed_param else "± s.d. over trials"
    return _layout(fig, f"Ablation: effect of each factor ({spread})", height=320 * rows + 60)


def baseline_figure(info: BaselineInfo, metric: str = _BPS) -> go.Figure:
    """BPS of every complete trial per model family, and BPS against parameter count."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[f"{metric} by model family", f"{metric} against parameters"],
    )
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    for i, g in enumerate(info.groups):
        color = palette[i % len(palette)]
        fig.add_box(
            y=list(g.values),
            name=g.label,
            boxpoints="all",
            jitter=0.4,
            marker={"color": color},
            legendgroup=g.label,
            row=1,
            col=1,
        )
        pts = [(p, v) for p, v in zip(g.n_params, g.values, strict=True) if p is not None]
        if pts:
            fig.add_scatter(
                x=[p for p, _ in pts],
                y=[v for _, v in pts],
                mode="markers",
                marker={"color": color, "size": 8},
                name=g.label,
                legendgroup=g.label,
                showlegend=False,
                row=1,
                col=2,
            )
    fig.update_xaxes(type="log", title="parameters", row=1, col=2)
    fig.update_yaxes(title=_objective(metric), row=1, col=1)
    return _layout(fig, "ViViT against the CNN baseline")


# --------------------------------------------------------------------------------------------
# Checkpoint analysis


def receptive_field_figure(info: ReceptiveFieldInfo) -> go.Figure:
    """Per session, each unit's readout position and a 1 s.d. ellipse over the frame.

    Simulated sessions also show the true receptive-field centres (green crosses), joined to
    the same unit's readout centre by a grey line.
    """
    n = len(info.sessions)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    titles = [
        s.session
        + (f" (median error {s.median_error_px:.1f} px)" if s.median_error_px is not None else "")
        for s in info.sessions
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    theta = np.linspace(0, 2 * np.pi, 33)
    for i, s in enumerate(info.sessions):
        r, c = divmod(i, cols)
        at = {"row": r + 1, "col": c + 1}
        xs: list[float | None] = []
        ys: list[float | None] = []
        for x, y, sx, sy in zip(s.x, s.y, s.sigma_x, s.sigma_y, strict=True):
            xs += [*(x + sx * np.cos(theta)).tolist(), None]
            ys += [*(y + sy * np.sin(theta)).tolist(), None]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"width": 1, "color": "rgba(31,119,180,0.45)"},
            name="readout 1 s.d.",
            showlegend=i == 0,
            hoverinfo="skip",
            **at,
        )
        if s.true_x:
            lx: list[float | None] = []
            ly: list[float | None] = []
            for x, y, tx, ty in zip(s.x, s.y, s.true_x, s.true_y, strict=True):
                lx += [x, tx, None]
                ly += [y, ty, None]
            fig.add_scatter(
                x=lx,
                y=ly,
                mode="lines",
                line={"width": 1, "color": "rgba(120,120,120,0.6)"},
                name="readout to true",
                showlegend=i == 0,
                hoverinfo="skip",
                **at,
            )
            fig.add_scatter(
                x=list(s.true_x),
                y=list(s.true_y),
                mode="markers",
                marker={"symbol": "x-thin", "size": 8, "line": {"width": 2, "color": "#2ca02c"}},
                text=[f"unit {u} (true)" for u in range(len(s.true_x))],
                name="true centre (simulated)",
                showlegend=i == 0,
                **at,
            )
        fig.add_scatter(
            x=list(s.x),
            y=list(s.y),
            mode="markers",
            marker={"size": 5, "color": "#d62728"},
            text=[f"unit {u}" for u in range(len(s.x))],
            name="readout centre",
            showlegend=i == 0,
            **at,
        )
        # The frame's outline, so that positions read against the stimulus.
        fig.add_shape(
            type="rect", x0=0, y0=0, x1=s.width, y1=s.height, line={"color": "black"}, **at
        )
        pad = 0.05 * max(s.width, s.height)
        axis = "" if i == 0 else str(i + 1)
        fig.update_yaxes(
            range=[s.height + pad, -pad],
            scaleanchor=f"x{axis}",
            scaleratio=1,
            constrain="domain",
            title="y (px)",
            **at,
        )
        fig.update_xaxes(range=[-pad, s.width + pad], constrain="domain", title="x (px)", **at)
    return _layout(
        fig, "Gaussian readout receptive fields (centre, 1 s.d.)", height=420 * rows + 60
    )


def spatial_attention_figure(info: AttentionInfo) -> go.Figure:
    """Head-averaged spatial attention of a few query patches, one row per layer."""
    layers = info.spatial_query_maps
    queries = info.queries
    fig = make_subplots(
        rows=len(layers),
        cols=len(queries),
        subplot_titles=[
            f"layer {li + 1}, query ({q[0]},{q[1]})" for li in range(len(layers)) for q in queries
        ],
        horizontal_spacing=0.04,
        vertical_spacing=0.08,
    )
    top = max((float(np.max(m)) for maps in layers for m in maps), default=1.0)
    for li, maps in enumerate(layers):
        for qi, m in enumerate(maps):
            fig.add_heatmap(
                z=np.asarray(m).tolist(),
                colorscale="Magma",
                zmin=0.0,
                zmax=top,
                showscale=li == 0 and qi == len(queries) - 1,
                hovertemplate="key (%{y},%{x}): %{z:.3f}<extra></extra>",
                row=li + 1,
                col=qi + 1,
            )
            fig.add_scatter(
                x=[queries[qi][1]],
                y=[queries[qi][0]],
                mode="markers",
                marker={"symbol": "x", "color": "cyan", "size": 9},
                showlegend=False,
                hoverinfo="skip",
                row=li + 1,
                col=qi + 1,
            )
    _square_cells(fig, len(layers), len(queries))
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return _layout(
        fig,
        "Spatial attention of query patches (x), mean over heads and frames",
        height=220 * len(layers) + 80,
    )


def temporal_attention_figure(info: AttentionInfo) -> go.Figure:
    """Head-averaged temporal attention matrix (query time by key time) per temporal layer."""
    n = len(info.temporal_maps)
    fig = make_subplots(
        rows=1, cols=n, subplot_titles=[f"layer {i + 1}" for i in range(n)], horizontal_spacing=0.06
    )
    for i, m in enumerate(info.temporal_maps):
        z = np.asarray(m)
        fig.add_heatmap(
            z=z.tolist(),
            colorscale="Viridis",
            zmin=0.0,
            zmax=1.0,
            showscale=i == n - 1,
            texttemplate="%{z:.2f}" if z.shape[0] <= 8 else None,
            hovertemplate="query t=%{y}, key t=%{x}: %{z:.3f}<extra></extra>",
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title="key time token", dtick=1, row=1, col=i + 1)
    _square_cells(fig, 1, n)
    fig.update_yaxes(dtick=1)
    fig.update_yaxes(title="query time token", col=1)
    causal = (
        f"largest mean mass on future keys: {info.temporal_future_mass:.2g}"
        if info.temporal_future_mass is not None
        else "one time token"
    )
    return _layout(fig, f"Temporal attention, mean over heads ({causal})", height=380)


def attention_entropy_figure(info: AttentionInfo) -> go.Figure:
    """Mean attention entropy (bits) per layer and head, spatial and temporal side by side.

    Each colour scale runs from 0 (one key takes all) to the entropy of uniform attention.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            f"spatial (uniform: {info.spatial_max_entropy:.2f} bits)",
            f"temporal (uniform over visible keys: {info.temporal_max_entropy:.2f} bits)",
        ],
        horizontal_spacing=0.15,
    )
    for col, ent, top in (
        (1, info.spatial_entropy, info.spatial_max_entropy),
        (2, info.temporal_entropy, info.temporal_max_entropy),
    ):
        z = np.asarray(ent)
        if z.size == 0:
            continue
        fig.add_heatmap(
            z=z.tolist(),
            x=[f"h{h + 1}" for h in range(z.shape[1])],
            y=[f"layer {i + 1}" for i in range(z.shape[0])],
            colorscale="Cividis",
            zmin=0.0,
            zmax=max(top, float(z.max()), 1e-6),
            texttemplate="%{z:.2f}",
            colorbar={"x": 0.43 if col == 1 else 1.0, "title": {"text": "bits"}},
            hovertemplate="%{y} %{x}: %{z:.2f} bits<extra></extra>",
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig,
        "Attention entropy per layer and head",
        height=120 + 50 * max(len(info.spatial_entropy), len(info.temporal_entropy), 3),
    )


def register_figure(info: AttentionInfo) -> go.Figure:
    """Share of each spatial layer's and head's attention that patches give to register tokens."""
    z = np.asarray(info.register_share)
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=[f"h{h + 1}" for h in range(z.shape[1])],
            y=[f"layer {i + 1}" for i in range(z.shape[0])],
            colorscale="Blues",
            zmin=0,
            zmax=max(float(z.max()), info.register_uniform_share or 0.0, 1e-6),
            colorbar={"title": {"text": "share"}},
            texttemplate="%{z:.3f}",
            hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    uniform = info.register_uniform_share or 0.0
    return _layout(
        fig,
        f"Register-token use: attention share on {info.num_registers} registers "
        f"(uniform would be {uniform:.3f})",
        height=120 + 50 * max(len(z), 3),
    )
