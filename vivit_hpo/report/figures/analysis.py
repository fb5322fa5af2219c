"""A trained run's figures: its readout's receptive fields and its attention.

Every ``*_figure`` takes one dataclass of :mod:`vivit_hpo.report.analysis`.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vivit_hpo.report.analysis import AttentionInfo, ReceptiveFieldInfo
from vivit_hpo.report.figures._style import _layout


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
