"""Small layers: norms, MLP, DropPath, rotary and absolute position embeddings, the first
layer's smoothness penalty (``laplace_l2``) and a 3-D convolution that runs as a 2-D one
on a CPU (``conv3d``).

Conventions:
- Linear layers inside blocks have no bias (PaLM style, as the reference benchmark); the norms
  carry the only per-channel offsets.
- RoPE uses the "rotate half" pairing: channel ``j`` of a head is rotated together with channel
  ``j + d/2``. It is the same rotation as the interleaved pairing up to a fixed permutation of
  the head channels (which the projections learn away) and needs no strided copies.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.errors import ConfigError

__all__ = [
    "MLP",
    "AbsolutePosEmbed",
    "BatchNormLast",
    "DropPath",
    "RMSNorm",
    "apply_rope",
    "conv3d",
    "laplace_l2",
    "make_norm",
    "mlp_activate",
    "mlp_hidden_dim",
    "mlp_in_dim",
    "rope_angles_1d",
    "rope_angles_2d",
    "sincos_1d",
    "sincos_2d",
]

NormKind = Literal["rms", "layer"]
MLPKind = Literal["swiglu", "gelu"]
ROPE_BASE = 10000.0


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` that casts its weight to the input's dtype.

    Under bf16 autocast the input is bf16 while the weight stays fp32, and ``rms_norm`` then
    falls back from its fused kernel to a slow composite; casting the weight keeps it fused
    (the kernel accumulates in fp32 either way).
    """

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D), dtype of ``x``."""
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def make_norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    """:class:`RMSNorm` for ``kind="rms"``, ``nn.LayerNorm`` for ``"layer"`` (each over the last
    dim of one token), :class:`BatchNormLast` for ``"batch"`` (each channel over the batch)."""
    if kind == "rms":
        return RMSNorm(dim, eps=eps)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "batch":
        return BatchNormLast(dim, eps=eps)
    raise ConfigError(f"norm={kind!r} is not a norm; use 'rms', 'layer' or 'batch'")


def mlp_hidden_dim(dim: int, mlp_ratio: float, kind: str) -> int:
    """Hidden width of the MLP.

    GELU: ``round(mlp_ratio * dim)``. SwiGLU: ``2/3`` of that, rounded up to a multiple of 8,
    so its three matrices hold about the parameters (and FLOPs) of the two-matrix GELU MLP.
    """
    hidden = mlp_ratio * dim
    if kind == "swiglu":
        return max(8, 8 * math.ceil(2 * hidden / 3 / 8))
    if kind == "gelu":
        return max(1, round(hidden))
    raise ConfigError(f"mlp={kind!r} is not an MLP kind; use 'swiglu' or 'gelu'")


def mlp_in_dim(hidden: int, kind: str) -> int:
    """Width of the MLP's input projection: SwiGLU projects to the gate and the value."""
    return 2 * hidden if kind == "swiglu" else hidden


def mlp_activate(m: Tensor, kind: str) -> Tensor:
    """(..., mlp_in_dim) -> (..., hidden): ``silu(gate) * value`` or ``gelu``."""
    if kind == "swiglu":
        gate, value = m.chunk(2, dim=-1)
        return F.silu(gate) * value
    return F.gelu(m)


class MLP(nn.Module):
    """Position-wise MLP ``dim -> hidden -> dim`` (SwiGLU or GELU), no biases.

    Args:
        dim: model width D.
        mlp_ratio: hidden width as a multiple of D (see :func:`mlp_hidden_dim`).
        kind: "swiglu" or "gelu".
    """

    def __init__(self, dim: int, mlp_ratio: float, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.hidden = mlp_hidden_dim(dim, mlp_ratio, kind)
        self.fc_in = nn.Linear(dim, mlp_in_dim(self.hidden, kind), bias=False)
        self.fc_out = nn.Linear(self.hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.fc_out(mlp_activate(self.fc_in(x), self.kind))


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples (training only).

    The kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> (B, ...); one Bernoulli draw per sample along dim 0."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- rotary position embeddings ------------------------------------------------------------


def _inv_freq(n_freq: int, device: torch.device | None) -> Tensor:
    """(n_freq,) frequencies ``base^(-i / n_freq)``, the RoPE paper's ``theta_i``."""
    return ROPE_BASE ** (-torch.arange(n_freq, device=device, dtype=torch.float32) / n_freq)


def rope_angles_1d(length: int, head_dim: int, device: torch.device | None = None) -> Tensor:
    """Rotation angles for positions ``0..length-1`` over a whole head.

    Returns:
        (length, head_dim // 2) float32 angles.
    """
    pos = torch.arange(length, device=device, dtype=torch.float32)
    return torch.outer(pos, _inv_freq(head_dim // 2, device))


def rope_angles_2d(
    height: int, width: int, head_dim: int, device: torch.device | None = None
) -> Tensor:
    """Axial 2D RoPE angles for a row-major ``height x width`` grid.

    Half of the head's channels rotate with the row index, the other half with the column index
    (so ``head_dim % 4 == 0``: each half is made of rotation pairs).

    Returns:
        (height * width, head_dim // 2) float32 angles; the first ``head_dim // 4`` columns are
        row angles, the rest column angles.
    """
    if head_dim % 4:
        raise ConfigError(f"head dim {head_dim} must be a multiple of 4 for 2D RoPE")
    freq = _inv_freq(head_dim // 4, device)  # (d/4,)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    row_ang = torch.outer(rows, freq)[:, None, :].expand(height, width, -1)  # (H, W, d/4)
    col_ang = torch.outer(cols, freq)[None, :, :].expand(height, width, -1)  # (H, W, d/4)
    return torch.cat([row_ang, col_ang], dim=-1).reshape(height * width, head_dim // 2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(j, j + d/2)`` of ``x`` by the given angles.

    Args:
        x: (..., N, d).
        cos, sin: broadcastable to (..., N, d/2), e.g. (N, d/2) or (B, 1, N, d/2). A zero angle
            leaves its token unchanged (used for register tokens).

    Returns:
        (..., N, d), dtype of ``x``.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    # x * [cos, cos] + [x2, x1] * [-sin, sin]: four passes over x where the halves' products
    # and their concatenation take seven (1.3x to 3x faster forward and backward on a CPU).
    full_cos, full_sin = torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)
    return x * full_cos + x.roll(x.shape[-1] // 2, dims=-1) * full_sin


# --- absolute position embeddings ----------------------------------------------------------


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Transformer sinusoidal embedding of (N,) positions -> (N, dim) float32.

    The first half of the channels are sines, the second cosines; an odd ``dim`` gets a zero
    last channel.
    """
    n_freq = dim // 2
    freq = 1.0 / (10000.0 ** (torch.arange(n_freq, device=positions.device) / max(n_freq, 1)))
    ang = torch.outer(positions.float(), freq)  # (N, dim/2)
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """2D sinusoidal embedding of a row-major grid: ``dim // 2`` channels for the row index, the
    rest for the column index. Returns (height * width, dim) float32."""
    rows = sincos_1d(torch.arange(height, device=device), dim // 2)  # (H, dim/2)
    cols = sincos_1d(torch.arange(width, device=device), dim - dim // 2)  # (W, dim - dim/2)
    grid = torch.cat(
        [
            rows[:, None, :].expand(height, width, -1),
            cols[None, :, :].expand(height, width, -1),
        ],
        dim=-1,
    )  # (H, W, dim)
    return grid.reshape(height * width, dim)


class AbsolutePosEmbed(nn.Module):
    """Factorised absolute position embedding added to the tokens: spatial (S, D) + temporal (T, D).

    ``"sinusoidal"``: fixed 2D sin-cos over the grid rows/cols plus 1D sin-cos over time; works
    for any grid.

    ``"learned"``: a spatial table for the largest grid (``max_grid``) and a temporal table of
    ``max_grid[0]`` rows. A session with a smaller (or larger) spatial grid gets the table
    resampled bilinearly to its grid, so every session's embedding spans its whole field of view
    (timm's ``resample_abs_pos_embed`` does the same). Time is aligned to the present: a sequence
    of ``T`` tokens uses the last ``T`` rows of the temporal table (the newest token always gets
    the same embedding); more tokens than the table holds is an error.

    Args:
        kind: "learned" or "sinusoidal".
        dim: model width D.
        max_grid: (T_p, H_p, W_p) of the largest input; required for "learned".
    """

    def __init__(self, kind: str, dim: int, max_grid: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        if kind not in ("learned", "sinusoidal"):
            raise ConfigError(f"pos_embed={kind!r}: use 'rope', 'learned' or 'sinusoidal'")
        self.kind = kind
        self.dim = dim
        self.spatial: nn.Parameter | None = None
        self.temporal: nn.Parameter | None = None
        if kind == "learned":
            if max_grid is None:
                raise ConfigError(
                    "pos_embed='learned' needs the largest token grid; build the core with "
                    "max_input=(num_lags, max height, max width)"
                )
            t, h, w = max_grid
            self.spatial = nn.Parameter(torch.empty(1, dim, h, w))
            self.temporal = nn.Parameter(torch.empty(t, dim))
            nn.init.trunc_normal_(self.spatial, std=0.02)
            nn.init.trunc_normal_(self.temporal, std=0.02)

    def forward(self, grid: tuple[int, int, int], device: torch.device) -> Tensor:
        """The embedding of a (T, H, W) token grid: (T, H*W, D) float32 (or parameter dtype)."""
        t, h, w = grid
        if self.kind == "sinusoidal":
            spatial = sincos_2d(h, w, self.dim, device)  # (S, D)
            temporal = sincos_1d(torch.arange(t, device=device), self.dim)  # (T, D)
        else:
            assert self.spatial is not None and self.temporal is not None
            table: Tensor = self.spatial
            if table.shape[-2:] != (h, w):
                table = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=False)
            spatial = table.flatten(2).transpose(1, 2)[0]  # (S, D)
            if t > self.temporal.shape[0]:
                raise ConfigError(
                    f"input has {t} temporal tokens but the learned position table holds "
                    f"{self.temporal.shape[0]}; build the model with a larger num_lags"
                )
            temporal = self.temporal[self.temporal.shape[0] - t :]  # (T, D)
        return temporal[:, None, :] + spatial[None, :, :]  # (T, S, D)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, dim={self.dim}"


# The discrete 2-D Laplacian (neuralpredictors' ``laplace3x3``).
_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def laplace_l2(weight: Tensor) -> Tensor:
    """Normalised Laplace penalty ``||Laplace * w||^2 / ||w||^2`` of conv filters.

    Args:
        weight: (..., k_h, k_w) filters; every leading index is one 2-D filter.

    Returns:
        A scalar: small for spatially smooth filters, whatever their scale (neuralpredictors'
        ``LaplaceL2norm``, the Laplace regulariser of the lags-as-channels CNN).
    """
    kh, kw = weight.shape[-2:]
    w = weight.reshape(-1, 1, kh, kw)
    lap = F.conv2d(w, _LAPLACE.to(w)[None, None], padding=1)  # (n, 1, kh, kw)
    return lap.pow(2).sum() / w.pow(2).sum().clamp_min(1e-12)


class BatchNormLast(nn.BatchNorm1d):
    """Batch norm over the last dimension of a (..., D) tensor: each channel normalised by its
    statistics over every other index (batch, time, positions), running ones at evaluation.
    Unlike a per-token norm it keeps each token's amplitude relative to the others."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def conv3d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, ...] | int = 1
) -> Tensor:
    """``F.conv3d(x, weight, bias, stride)`` (no padding), on a CPU as one 2-D convolution.

    On a CPU each output step's ``k_t`` input frames are stacked as channels (channel
    ``c * k_t + lag``, the order of ``weight.flatten(1, 2)``) and the steps go along the batch.
    The sum is the same; CPU convolution kernels are several times faster in 2-D than in 3-D
    (the quick start's tubelets over 32 windows: 20 against 7 ms per forward and backward on
    one thread). Overlapping steps (stride below ``k_t``) copy each frame ``k_t / s_t`` times.

    Args:
        x: (B, C, T, H, W).
        weight: (D, C, k_t, k_h, k_w).
        bias: (D,) or None.
        stride: (s_t, s_h, s_w), or one int for all three.

    Returns:
        (B, D, T', H', W'), ``T' = (T - k_t) // s_t + 1``.
    """
    st, sh, sw = (stride,) * 3 if isinstance(stride, int) else stride
    if x.device.type != "cpu":  # cuDNN's 3-D kernels: the path the GPU figures measure
        return F.conv3d(x, weight, bias, (st, sh, sw))
    b, c = x.shape[:2]
    kt = weight.shape[2]
    steps = x.unfold(2, kt, st)  # (B, C, T', H, W, k_t)
    t_out = steps.shape[2]
    stacked = steps.permute(0, 2, 1, 5, 3, 4).reshape(b * t_out, c * kt, *x.shape[3:])
    out = F.conv2d(stacked, weight.flatten(1, 2), bias, (sh, sw))  # (B*T', D, H', W')
    return out.view(b, t_out, *out.shape[1:]).transpose(1, 2)
