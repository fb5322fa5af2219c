"""Cheap, shape-only cost figures of a model config: parameters, FLOPs, memory, feasibility.

These need no data and build nothing on a real device, so a search can refuse or rank a
configuration before training it.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from vivit_hpo.config import CNN2DConfig, CNNConfig, LNConfig, ModelConfig, ViViTConfig
from vivit_hpo.models.cnn import CNNCore, cnn_layers
from vivit_hpo.models.cnn2d import CNN2DCore, LNCore, cnn2d_grid, cnn2d_layers
from vivit_hpo.models.layers import mlp_hidden_dim, mlp_in_dim
from vivit_hpo.models.vivit import ViViTCore, check_grid, num_kept_tokens, tubelet_grid

__all__ = ["check_feasible", "count_parameters", "estimate_memory_bytes", "flops_per_sample"]

InputShape = tuple[int, int, int, int]  # (C, F, H, W); F = L for windows
_OPTIMIZER_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + AdamW's two fp32 moments

CoreCfg = ViViTConfig | CNNConfig | CNN2DConfig | LNConfig


def _core_cfg(cfg: ModelConfig | CoreCfg) -> CoreCfg:
    return cfg.core if isinstance(cfg, ModelConfig) else cfg


def _conv_layers(
    core: CoreCfg, input_shape: InputShape, num_lags: int
) -> list[tuple[int, int, tuple[int, int, int], int]]:
    """Every convolution of a convolutional core on a sample of ``input_shape`` (C, F, H, W)
    as (in, out, kernel, output elements per channel): the 3-D CNN keeps every frame (halving
    H and W per stage), the 2-D CNN's and the LN's lag-spanning first layer leaves the
    ``F - num_lags + 1`` frames with a full history."""
    c, length, h, w = input_shape
    if isinstance(core, CNNConfig):
        return [
            (cin, cout, k, length * _halved(h, level) * _halved(w, level))
            for cin, cout, k, level in cnn_layers(core, c)
        ]
    out = length - num_lags + 1
    if isinstance(core, CNN2DConfig):
        gh, gw = cnn2d_grid(core, h, w)
        return [(cin, cout, k, out * gh * gw) for cin, cout, k in cnn2d_layers(core, c, num_lags)]
    assert isinstance(core, LNConfig)
    return [(c, core.filters, (num_lags, core.kernel, core.kernel), out * h * w)]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_feasible(
    cfg: ModelConfig | CoreCfg,
    input_shape: InputShape,
    *,
    num_lags: int | None = None,
) -> str | None:
    """Why a core of ``cfg`` cannot take inputs of ``input_shape`` (C, F, H, W); None if it can.

    ``F`` is the frames of one sample: ``num_lags`` for windows, the clip's frames in clip mode
    (:func:`~vivit_hpo.models.encoder.clip_geometry`), with ``num_lags`` given (default F).

    ViViT reasons: frames smaller than the tubelet, fewer lags than the temporal kernel, fewer
    than 2 temporal tokens over the F frames, a head dim that 2D RoPE cannot split. CNN
    reasons: no stages, non-positive channel counts or kernel sizes. The 2-D CNN and the LN
    take any input (their first layer spans the L lags; the config checks its own channels and
    kernels).
    """
    core = _core_cfg(cfg)
    c, length, h, w = input_shape
    if min(c, length, h, w) < 1:
        return f"input shape (C, F, H, W) = {tuple(input_shape)} has an empty axis"
    if isinstance(core, ViViTConfig):
        return check_grid(core, (length, h, w), num_lags)
    if not isinstance(core, CNNConfig):
        return None
    if not core.channels:
        return "cnn core has no stages; give at least one entry in channels"
    if min(core.channels) < 1:
        return f"cnn channels {core.channels} must all be >= 1"
    if min(core.stem_kernel + core.kernel_size) < 1:
        return f"cnn kernels {core.stem_kernel}, {core.kernel_size} must be >= 1 on every axis"
    return None


def _vivit_shapes(cfg: ViViTConfig, input_shape: InputShape) -> dict[str, int]:
    c, length, h, w = input_shape
    (t, hp, wp), _ = tubelet_grid((length, h, w), cfg.kernel_size, cfg.stride)
    s = hp * wp
    hidden = mlp_hidden_dim(cfg.embed_dim, cfg.mlp_ratio, cfg.mlp)
    return {
        "c": c,
        "t": t,
        "s": s,
        "s_kept": num_kept_tokens(s, cfg.patch_dropout),
        "r": cfg.num_registers,
        "d": cfg.embed_dim,
        "hidden": hidden,
        "mlp_in": mlp_in_dim(hidden, cfg.mlp),
    }


def _stem_layers(cfg: ViViTConfig, in_channels: int) -> list[tuple[int, int]]:
    """(in, out) channels of each conv of the ViViT's stem (empty without one)."""
    chans = (in_channels, *cfg.stem_channels)
    return list(itertools.pairwise(chans))


def _vivit_forward_flops(cfg: ViViTConfig, input_shape: InputShape) -> float:
    g = _vivit_shapes(cfg, input_shape)
    d, t, s_k, r = g["d"], g["t"], g["s_kept"], g["r"]
    kt, kh, kw = cfg.kernel_size
    _, length, h, w = input_shape
    st, sh, sw = cfg.stem_kernel
    stem = sum(
        2 * cin * st * sh * sw * cout * length * h * w for cin, cout in _stem_layers(cfg, g["c"])
    )
    tok_in = cfg.stem_channels[-1] if cfg.stem_channels else g["c"]
    if cfg.tokenizer_rank is None:
        tokenizer = 2 * tok_in * kt * kh * kw * d * t * g["s"]
    else:  # spatial filters on every (padded) frame, then the temporal conv
        rank, frames = cfg.tokenizer_rank, (t - 1) * cfg.stride[0] + kt
        tokenizer = 2 * tok_in * kh * kw * rank * frames * g["s"] + 2 * rank * kt * d * t * g["s"]
    # Matmuls per token are the same for parallel and sequential blocks:
    # q, k, v and the MLP input (D -> 3D + M), attention and MLP outputs (D + hidden -> D).
    per_token = 2 * d * (3 * d + g["mlp_in"]) + 2 * (d + g["hidden"]) * d

    def attn(n: int) -> int:  # q k^T and weights @ v; causal counted in full, as the reference
        return 4 * n * n * d

    n_s = s_k + r
    spatial = cfg.num_spatial_blocks * t * (n_s * per_token + attn(n_s))
    temporal = cfg.num_temporal_blocks * s_k * (t * per_token + attn(t))
    return float(stem + tokenizer + spatial + temporal)


def _halved(n: int, level: int) -> int:
    for _ in range(level):
        n = math.ceil(n / 2)
    return n


def _conv_forward_flops(cfg: CoreCfg, input_shape: InputShape, num_lags: int) -> float:
    total = 0
    for cin, cout, (kt, kh, kw), outputs in _conv_layers(cfg, input_shape, num_lags):
        total += 2 * cin * kt * kh * kw * cout * outputs
    return float(total)


def flops_per_sample(
    cfg: ModelConfig | CoreCfg, input_shape: InputShape, *, num_lags: int | None = None
) -> float:
    """Training FLOPs per sample of the core: 3 x the forward matmul/conv/attention FLOPs.

    Counted from shapes (a multiply-add is 2 FLOPs), like the reference benchmark's
    ``flops_per_sample``: the stem convs (at full resolution), tokenizer conv, every block's
    projections and MLP, and attention (``4 N^2 D`` per sequence, causal counted in full).
    Norms (token norm and QK-norm included), activations, RoPE and the readout, modulator,
    behaviour embedding and shifter are left out (small next to the core). Patch dropout is
    applied (training FLOPs use the kept tokens). For the CNN cores and the LN: every
    convolution at every output frame (the 3-D CNN's F, the 2-D CNN's and the LN's
    ``F - num_lags + 1``), norms left out. ``input_shape`` is (C, F, H, W), F the frames of one
    sample (``num_lags``, the default, for windows).
    """
    core = _core_cfg(cfg)
    if isinstance(core, ViViTConfig):
        return 3.0 * _vivit_forward_flops(core, input_shape)
    return 3.0 * _conv_forward_flops(core, input_shape, num_lags or input_shape[1])


def _core_parameters(core: CoreCfg, input_shape: InputShape, num_lags: int) -> int:
    c, length, h, w = input_shape
    module: nn.Module
    with torch.device("meta"):  # shapes only, no memory
        if isinstance(core, ViViTConfig):
            module = ViViTCore(core, c, (length, h, w))
        elif isinstance(core, CNNConfig):
            module = CNNCore(core, c)
        elif isinstance(core, CNN2DConfig):
            module = CNN2DCore(core, c, num_lags)
        else:
            module = LNCore(core, c, num_lags)
    return count_parameters(module)


def estimate_memory_bytes(
    cfg: ModelConfig | CoreCfg,
    input_shape: InputShape,
    batch_size: int,
    *,
    activation_bytes: int = 2,
    num_lags: int | None = None,
) -> int:
    """A rough estimate of the training-step memory of the core, in bytes.

    ``16 bytes x core parameters`` (fp32 weights, grads, AdamW moments) plus the activations
    kept for the backward pass, counted per token (ViViT: about ``10 D + M + 2 hidden`` elements
    per token per block, D the width, M the MLP input width; with gradient checkpointing the
    block inputs plus one block's activations; QK-norm adds ``2 D``, the token norm and
    behaviour tokens one token tensor each, a stem ``C_in + 3 C_out`` per stem conv and
    full-resolution position, a separable tokenizer its ``rank`` maps per frame) or per conv
    layer (the CNN cores and the LN: ``C_in + 3 C_out`` elements per position), times
    ``activation_bytes`` (2: bf16 autocast, 4: fp32) and the batch size, plus the fp32 input
    batch. It assumes a fused attention kernel (no N x N matrices kept), and leaves out
    readouts, the modulator, the allocator's slack and the CUDA context. It is an estimate for
    ranking and refusing configurations, not a measurement: check it against
    ``torch.cuda.max_memory_allocated``.
    """
    core = _core_cfg(cfg)
    c, length, h, w = input_shape
    num_lags = num_lags or length
    params = _core_parameters(core, input_shape, num_lags)
    inputs = batch_size * c * length * h * w * 4
    if isinstance(core, ViViTConfig):
        g = _vivit_shapes(core, input_shape)
        # 2 D more per token with QK-norm: the normed q and k are kept for the backward pass.
        per_token_block = (12 if core.qk_norm else 10) * g["d"] + g["mlp_in"] + 2 * g["hidden"]
        n_spatial = g["t"] * (g["s_kept"] + g["r"])
        n_temporal = g["s_kept"] * g["t"]
        blocks = [n_spatial] * core.num_spatial_blocks + [n_temporal] * core.num_temporal_blocks
        if core.grad_checkpointing:
            elements = sum(n * g["d"] for n in blocks) + max(blocks) * per_token_block
        else:
            elements = sum(n * per_token_block for n in blocks)
        elements += 3 * g["t"] * g["s"] * g["d"]  # tokens, final norm, output grid
        extra = int(core.token_norm) + int(isinstance(cfg, ModelConfig) and cfg.behavior_tokens)
        elements += extra * g["t"] * g["s"] * g["d"]  # normed tokens, tokens + behaviour
        # conv output, norm, GELU kept per stem layer, plus its input
        elements += sum((cin + 3 * cout) * length * h * w for cin, cout in _stem_layers(core, c))
        if core.tokenizer_rank is not None:  # the spatial filters' output, every frame
            elements += core.tokenizer_rank * length * g["s"]
    else:
        elements = sum(
            (cin + 3 * cout) * outputs  # the input counted at the output's size
            for cin, cout, _, outputs in _conv_layers(core, input_shape, num_lags)
        )
    return int(
        params * _OPTIMIZER_BYTES_PER_PARAM + inputs + batch_size * elements * activation_bytes
    )
