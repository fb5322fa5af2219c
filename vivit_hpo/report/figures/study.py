"""The study's figures: the optimisation history, the learning curves, the parameters against
the objective, its costs, its sessions, an ablation and the baselines.

Every ``*_figure`` takes one dataclass of :mod:`vivit_hpo.report.data`.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
from vivit_hpo.report.figures._style import _BPS, STATUS_COLORS, _layout, _objective


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
