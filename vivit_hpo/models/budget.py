"""Cheap, shape-only cost figures of a model config: parameters, FLOPs, memory, feasibility.

These need no data and build nothing on a real device, so a search can refuse or rank a
configuration before training it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vivit_hpo.config import CNNConfig, ModelConfig, ViViTConfig
from vivit_hpo.models.cnn import CNNCore, cnn_layers
from vivit_hpo.models.layers import mlp_hidden_dim, mlp_in_dim
from vivit_hpo.models.vivit import ViViTCore, check_grid, num_kept_tokens, tubelet_grid

__all__ = ["check_feasible", "count_parameters", "estimate_memory_bytes", "flops_per_sample"]

InputShape = tuple[int, int, int, int]  # (C, F, H, W); F = L for windows
_OPTIMIZER_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + AdamW's two fp32 moments


def _core_cfg(cfg: ModelConfig | ViViTConfig | CNNConfig) -> ViViTConfig | CNNConfig:
    return cfg.core if isinstance(cfg, ModelConfig) else cfg


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_feasible(
    cfg: ModelConfig | ViViTConfig | CNNConfig,
    input_shape: InputShape,
    *,
    num_lags: int | None = None,
) -> str | None:
    """Why a core of ``cfg`` cannot take inputs of ``input_shape`` (C, F, H, W); None if it can.

    ``F`` is the frames of one sample: ``num_lags`` for windows, the clip's frames in clip mode
    (:func:`~vivit_hpo.models.encoder.clip_geometry`), with ``num_lags`` given (default F).

    ViViT reasons: frames smaller than the tubelet, fewer lags than the temporal kernel, fewer
    than 2 temporal tokens over the F frames, a head dim that 2D RoPE cannot split. CNN
    reasons: no stages, non-positive channel counts or kernel sizes.
    """
    core = _core_cfg(cfg)
    c, length, h, w = input_shape
    if min(c, length, h, w) < 1:
        return f"input shape (C, F, H, W) = {tuple(input_shape)} has an empty axis"
    if isinstance(core, ViViTConfig):
        return check_grid(core, (length, h, w), num_lags)
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


def _vivit_forward_flops(cfg: ViViTConfig, input_shape: InputShape) -> float:
    g = _vivit_shapes(cfg, input_shape)
    d, t, s_k, r = g["d"], g["t"], g["s_kept"], g["r"]
    kt, kh, kw = cfg.kernel_size
    tokenizer = 2 * g["c"] * kt * kh * kw * d * t * g["s"]
    # Matmuls per token are the same for parallel and sequential blocks:
    # q, k, v and the MLP input (D -> 3D + M), attention and MLP outputs (D + hidden -> D).
    per_token = 2 * d * (3 * d + g["mlp_in"]) + 2 * (d + g["hidden"]) * d

    def attn(n: int) -> int:  # q k^T and weights @ v; causal counted in full, as the reference
        return 4 * n * n * d

    n_s = s_k + r
    spatial = cfg.num_spatial_blocks * t * (n_s * per_token + attn(n_s))
    temporal = cfg.num_temporal_blocks * s_k * (t * per_token + attn(t))
    return float(tokenizer + spatial + temporal)


def _halved(n: int, level: int) -> int:
    for _ in range(level):
        n = math.ceil(n / 2)
    return n


def _cnn_forward_flops(cfg: CNNConfig, input_shape: InputShape) -> float:
    c, length, h, w = input_shape
    total = 0
    for cin, cout, (kt, kh, kw), level in cnn_layers(cfg, c):
        total += 2 * cin * kt * kh * kw * cout * length * _halved(h, level) * _halved(w, level)
    return float(total)


def flops_per_sample(cfg: ModelConfig | ViViTConfig | CNNConfig, input_shape: InputShape) -> float:
    """Training FLOPs per sample of the core: 3 x the forward matmul/conv/attention FLOPs.

    Counted from shapes (a multiply-add is 2 FLOPs), like the reference benchmark's
    ``flops_per_sample``: tokenizer conv, every block's projections and MLP, and attention
    (``4 N^2 D`` per sequence, causal counted in full). Norms, activations, RoPE and the
    readout/modulator are left out (small next to the core). Patch dropout is applied (training
    FLOPs use the kept tokens). For the CNN: every convolution, norms left out.
    """
    core = _core_cfg(cfg)
    if isinstance(core, ViViTConfig):
        return 3.0 * _vivit_forward_flops(core, input_shape)
    return 3.0 * _cnn_forward_flops(core, input_shape)


def _core_parameters(core: ViViTConfig | CNNConfig, input_shape: InputShape) -> int:
    c, length, h, w = input_shape
    with torch.device("meta"):  # shapes only, no memory
        module: nn.Module = (
            ViViTCore(core, c, (length, h, w))
            if isinstance(core, ViViTConfig)
            else CNNCore(core, c)
        )
    return count_parameters(module)


def estimate_memory_bytes(
    cfg: ModelConfig | ViViTConfig | CNNConfig,
    input_shape: InputShape,
    batch_size: int,
    *,
    activation_bytes: int = 2,
) -> int:
    """A rough estimate of the training-step memory of the core, in bytes.

    ``16 bytes x core parameters`` (fp32 weights, grads, AdamW moments) plus the activations
    kept for the backward pass, counted per token (ViViT: about ``10 D + M + 2 hidden``
    elements per token per block, D the width, M the MLP input width; with gradient
    checkpointing the block inputs plus one block's activations) or per conv layer (CNN:
    ``C_in + 3 C_out`` elements per position), times ``activation_bytes`` (2: bf16 autocast,
    4: fp32) and the batch size, plus the fp32 input batch. It assumes a fused attention kernel
    (no N x N matrices kept), and leaves out readouts, the modulator, the allocator's slack and
    the CUDA context. It is an estimate for ranking and refusing configurations, not a
    measurement: check it against ``torch.cuda.max_memory_allocated``.
    """
    core = _core_cfg(cfg)
    c, length, h, w = input_shape
    params = _core_parameters(core, input_shape)
    inputs = batch_size * c * length * h * w * 4
    if isinstance(core, ViViTConfig):
        g = _vivit_shapes(core, input_shape)
        per_token_block = 10 * g["d"] + g["mlp_in"] + 2 * g["hidden"]
        n_spatial = g["t"] * (g["s_kept"] + g["r"])
        n_temporal = g["s_kept"] * g["t"]
        blocks = [n_spatial] * core.num_spatial_blocks + [n_temporal] * core.num_temporal_blocks
        if core.grad_checkpointing:
            elements = sum(n * g["d"] for n in blocks) + max(blocks) * per_token_block
        else:
            elements = sum(n * per_token_block for n in blocks)
        elements += 3 * g["t"] * g["s"] * g["d"]  # tokens, final norm, output grid
    else:
        elements = sum(
            (cin + 3 * cout) * length * _halved(h, level) * _halved(w, level)
            for cin, cout, _, level in cnn_layers(core, c)
        )
    return int(
        params * _OPTIMIZER_BYTES_PER_PARAM + inputs + batch_size * elements * activation_bytes
    )
