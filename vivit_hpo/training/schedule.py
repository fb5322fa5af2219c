"""Learning-rate schedule and optimiser construction."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vivit_hpo.config import TrainConfig

__all__ = ["build_optimizer", "warmup_cosine"]


def warmup_cosine(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the peak learning rate at optimiser ``step`` (0-based).

    Linear warm-up over ``warmup`` steps, then a cosine from 1 down to ``floor`` at ``total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _split_decay(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    # Matrices and conv kernels decay; biases, norm gains and embeddings' 1-D vectors do not.
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def build_optimizer(
    core: Iterable[nn.Parameter],
    readout: Iterable[nn.Parameter],
    cfg: TrainConfig,
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW with the core at ``cfg.lr`` and readout/modulator at ``cfg.lr * readout_lr_ratio``.

    The readout gets no weight decay: its features carry their own L1 penalty and its
    positions must not be pulled towards the centre of the frame.
    """
    decay, no_decay = _split_decay(core)
    readout_params = [p for p in readout if p.requires_grad]
    groups = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"params": readout_params, "lr": cfg.lr * cfg.readout_lr_ratio, "weight_decay": 0.0},
    ]
    for g in groups:
        g["peak_lr"] = g["lr"]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        betas=cfg.betas,
        fused=device.type == "cuda",
    )
