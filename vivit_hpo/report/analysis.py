"""The data of a trained model's figures: readout receptive fields and attention statistics.

Pure functions of arrays (numpy), so they are tested on hand-made maps; getting the arrays out of
a model is :mod:`vivit_hpo.report.checkpoint`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "AttentionInfo",
    "ReceptiveFieldInfo",
    "SessionFields",
    "attention_info",
    "default_queries",
    "entropy_bits",
    "frame_transform",
    "receptive_field_info",
    "tubelet_transform",
]


@dataclass(frozen=True)
class SessionFields:
    """One session's readout positions and spreads in stimulus pixels (x right, y down).

    Coordinates are continuous: the frame spans ``[0, width] x [0, height]``. ``true_*`` hold
    the simulator's receptive-field centres and spreads when the session is simulated (else
    empty), and ``median_error_px`` the median distance between readout and true centres.
    """

    session: str
    width: int
    height: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    sigma_x: tuple[float, ...]
    sigma_y: tuple[float, ...]
    true_x: tuple[float, ...] = ()
    true_y: tuple[float, ...] = ()
    true_sigma: tuple[float, ...] = ()
    median_error_px: float | None = None


@dataclass(frozen=True)
class ReceptiveFieldInfo:
    sessions: tuple[SessionFields, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sessions": [asdict(s) for s in self.sessions]}


# x_px = offset_x + scale_x * mu_x, y_px = offset_y + scale_y * mu_y
PixelTransform = tuple[float, float, float, float]  # (offset_x, scale_x, offset_y, scale_y)


def frame_transform(height: int, width: int) -> PixelTransform:
    """The map of [-1, 1] onto the whole frame (edges at -1 and 1)."""
    return (width / 2.0, width / 2.0, height / 2.0, height / 2.0)


def tubelet_transform(
    height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int]
) -> PixelTransform:
    """Readout coordinates to frame pixels for a ViViT core's tubelet grid.

    The readout's [-1, 1] spans the token grid as ``grid_sample(align_corners=False)`` reads it
    (cell edges at -1 and 1); token j covers pixels ``j*s - pad .. j*s - pad + k`` of the padded
    frame (the tokenizer pads height and width symmetrically), so a position ``u`` in token units
    sits at ``u*s - pad + k/2``.

    Args:
        height, width: the frame.
        kernel, stride: the tubelet's spatial (H, W) size and step.
    """
    from vivit_hpo.models.vivit import tubelet_grid

    (_, hp, wp), (_, top, _, left, _) = tubelet_grid((1, height, width), (1, *kernel), (1, *stride))
    (kh, kw), (sh, sw) = kernel, stride
    sx, sy = wp * sw / 2.0, hp * sh / 2.0
    return (sx + (kw - sw) / 2.0 - left, sx, sy + (kh - sh) / 2.0 - top, sy)


def receptive_field_info(
    mu: Mapping[str, np.ndarray],
    sigma: Mapping[str, np.ndarray],
    frame_sizes: Mapping[str, tuple[int, int]],
    transforms: Mapping[str, PixelTransform] | None = None,
    truth: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> ReceptiveFieldInfo:
    """Gaussian readout positions converted from readout coordinates to frame pixels.

    The readout samples the core's feature map with ``grid_sample``'s convention: ``mu[:, 0]`` is
    x (across the width) and ``mu[:, 1]`` is y, both in [-1, 1] over the feature map.

    Args:
        mu: per session, (N, 2) positions in [-1, 1].
        sigma: per session, (N,) isotropic or (N, 2) per-axis spreads in the same units.
        frame_sizes: per session, (height, width) of the stimulus in pixels.
        transforms: per session, the readout-to-pixel map (:func:`tubelet_transform` for a ViViT
            core); default :func:`frame_transform` (the feature map covers the frame).
        truth: per session, the true centres (N, 2) as (x, y) in [-1, 1] over the frame and the
            true spreads (N,) in pixels (or None), for simulated sessions.

    Returns:
        One :class:`SessionFields` per session, in the order of ``mu``.
    """
    out = []
    for name, m in mu.items():
        m = np.asarray(m, dtype=float)
        if m.ndim != 2 or m.shape[1] != 2:
            raise ValueError(f"mu of session {name!r} has shape {m.shape}; expected (N, 2)")
        s = np.asarray(sigma[name], dtype=float)
        s = np.abs(np.broadcast_to(s[:, None] if s.ndim == 1 else s, m.shape))  # (N, 2)
        h, w = frame_sizes[name]
        ox, bx, oy, by = (transforms or {}).get(name) or frame_transform(h, w)
        x, y = ox + bx * m[:, 0], oy + by * m[:, 1]  # (N,) pixels
        fields = SessionFields(
            session=name,
            width=int(w),
            height=int(h),
            x=tuple(x.tolist()),
            y=tuple(y.tolist()),
            sigma_x=tuple((s[:, 0] * bx).tolist()),
            sigma_y=tuple((s[:, 1] * by).tolist()),
        )
        if truth is not None and name in truth:
            centres, spreads = truth[name]
            c = np.asarray(centres, dtype=float)
            if c.shape != m.shape:
                raise ValueError(
                    f"true centres of session {name!r} have shape {c.shape}; expected {m.shape}"
                )
            tx, ty = (c[:, 0] + 1.0) * w / 2.0, (c[:, 1] + 1.0) * h / 2.0
            fields = replace(
                fields,
                true_x=tuple(tx.tolist()),
                true_y=tuple(ty.tolist()),
                true_sigma=() if spreads is None else tuple(np.asarray(spreads, float).tolist()),
                median_error_px=float(np.median(np.hypot(x - tx, y - ty))),
            )
        out.append(fields)
    return ReceptiveFieldInfo(sessions=tuple(out))


def entropy_bits(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in bits of distributions along ``axis`` (zeros contribute nothing)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def default_queries(grid: tuple[int, int], k: int = 4) -> tuple[tuple[int, int], ...]:
    """``k`` query patches (row, col) spread over a (rows, cols) token grid, the centre first."""
    rows, cols = grid
    candidates = [
        (rows // 2, cols // 2),
        (rows // 4, cols // 4),
        (rows // 4, (3 * cols) // 4),
        ((3 * rows) // 4, cols // 4),
        ((3 * rows) // 4, (3 * cols) // 4),
    ]
    seen: list[tuple[int, int]] = []
    for rc in candidates:
        rc = (min(rc[0], rows - 1), min(rc[1], cols - 1))
        if rc not in seen:
            seen.append(rc)
    return tuple(seen[:k])


@dataclass(frozen=True)
class AttentionInfo:
    """Attention statistics of one model on a batch.

    Attributes:
        grid: (rows, cols) of spatial patch tokens.
        num_registers: register tokens among the spatial keys.
        queries: the (row, col) query patches of ``spatial_query_maps``.
        spatial_query_maps: [layer][query] (rows, cols) head-mean attention over patch keys.
        temporal_maps: [layer] (T, T) head-mean attention, query time by key time.
        spatial_entropy: (layers, heads) mean entropy in bits over patch queries.
        temporal_entropy: (layers, heads) mean entropy in bits over time queries.
        spatial_max_entropy: entropy of uniform attention over all spatial keys.
        temporal_max_entropy: mean over time queries of the uniform entropy over the keys each may
            see (only the past and present when the attention is causal).
        temporal_future_mass: the largest mean attention any head puts on future keys (0 when
            causal), or None with fewer than 2 time tokens.
        register_share: (layers, heads) mean attention share patches give to registers.
        register_uniform_share: that share under uniform attention, or None without registers.
    """

    grid: tuple[int, int]
    num_registers: int
    queries: tuple[tuple[int, int], ...]
    spatial_query_maps: tuple[tuple[np.ndarray, ...], ...]
    temporal_maps: tuple[np.ndarray, ...]
    spatial_entropy: np.ndarray
    temporal_entropy: np.ndarray
    spatial_max_entropy: float
    temporal_max_entropy: float
    temporal_future_mass: float | None
    register_share: np.ndarray
    register_uniform_share: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (arrays as nested lists)."""
        return {
            "grid": list(self.grid),
            "num_registers": self.num_registers,
            "queries": [list(q) for q in self.queries],
            "spatial_query_maps": [
                [m.tolist() for m in layer] for layer in self.spatial_query_maps
            ],
            "temporal_maps": [m.tolist() for m in self.temporal_maps],
            "spatial_entropy": self.spatial_entropy.tolist(),
            "temporal_entropy": self.temporal_entropy.tolist(),
            "spatial_max_entropy": self.spatial_max_entropy,
            "temporal_max_entropy": self.temporal_max_entropy,
            "temporal_future_mass": self.temporal_future_mass,
            "register_share": self.register_share.tolist(),
            "register_uniform_share": self.register_uniform_share,
        }


def attention_info(
    spatial: Sequence[np.ndarray],
    temporal: Sequence[np.ndarray],
    grid: tuple[int, int],
    num_registers: int,
    *,
    registers_first: bool = True,
    causal: bool = True,
    queries: Sequence[tuple[int, int]] | None = None,
    spatial_entropy: np.ndarray | None = None,
    temporal_entropy: np.ndarray | None = None,
) -> AttentionInfo:
    """Summaries of per-layer attention maps for the report.

    Args:
        spatial: per spatial layer, (heads, S, S) attention (rows: queries, summing to 1) over
            S = registers + rows*cols tokens, averaged over the batch and frames.
        temporal: per temporal layer, (heads, T, T) attention, averaged over batch and positions.
        grid: (rows, cols) of the patch tokens (row-major in the token sequence).
        num_registers: R, the register tokens among the S spatial tokens.
        registers_first: registers are tokens ``0..R-1`` (else the last R).
        causal: the temporal attention is meant to be causal (sets the uniform reference).
        queries: (row, col) patches whose maps to keep; default :func:`default_queries`.
        spatial_entropy, temporal_entropy: (layers, heads) mean entropy in bits computed per
            sequence before averaging (the model's own); default: the entropy of the averaged
            maps, which is higher when sequences attend differently.

    Returns:
        An :class:`AttentionInfo`.
    """
    rows, cols = grid
    n_patch = rows * cols
    r = num_registers
    patch = slice(r, r + n_patch) if registers_first else slice(0, n_patch)
    regs = slice(0, r) if registers_first else slice(n_patch, n_patch + r)
    queries = tuple(queries) if queries is not None else default_queries(grid)
    query_maps = []
    sp_ent, reg_share = [], []
    for i, a in enumerate(spatial):
        a = np.asarray(a, dtype=float)
        if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] != n_patch + r:
            raise ValueError(
                f"spatial layer {i} has shape {a.shape}; expected (heads, {n_patch + r}, "
                f"{n_patch + r}) for a {rows}x{cols} grid and {r} registers"
            )
        pq = a[:, patch, :]  # (heads, P, S) patch queries only
        mean_heads = pq.mean(axis=0)  # (P, S)
        query_maps.append(
            tuple(mean_heads[q_r * cols + q_c, patch].reshape(rows, cols) for q_r, q_c in queries)
        )
        sp_ent.append(entropy_bits(pq).mean(axis=1))  # (heads,)
        reg_share.append(pq[:, :, regs].sum(axis=-1).mean(axis=1) if r else np.zeros(a.shape[0]))
    tm_maps, tm_ent = [], []
    future: list[float] = []
    max_t = 0.0
    for i, a in enumerate(temporal):
        a = np.asarray(a, dtype=float)
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise ValueError(f"temporal layer {i} has shape {a.shape}; expected (heads, T, T)")
        t = a.shape[1]
        tm_maps.append(a.mean(axis=0))
        tm_ent.append(entropy_bits(a).mean(axis=1))
        if t > 1:
            upper = np.triu(np.ones((t, t), dtype=bool), k=1)
            future.append(float((a * upper).sum(axis=-1).mean(axis=-1).max()))
        keys = np.arange(1, t + 1) if causal else np.full(t, t)
        max_t = float(np.log2(keys).mean())
    s_all = n_patch + r
    return AttentionInfo(
        grid=(rows, cols),
        num_registers=r,
        queries=queries,
        spatial_query_maps=tuple(query_maps),
        temporal_maps=tuple(tm_maps),
        spatial_entropy=np.asarray(spatial_entropy if spatial_entropy is not None else sp_ent),
        temporal_entropy=np.asarray(temporal_entropy if temporal_entropy is not None else tm_ent),
        spatial_max_entropy=float(np.log2(s_all)),
        temporal_max_entropy=max_t,
        temporal_future_mass=max(future) if future else None,
        register_share=np.array(reg_share),
        register_uniform_share=r / s_all if r else None,
    )
