"""Learning-rate schedule and optimiser construction."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vivit_hpo.config import TrainConfig

__all__ = ["build_optimizer", "split_decay", "warmup_cosine"]


def warmup_cosine(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the peak learning rate at optimiser ``step`` (0-based).

    Linear warm-up over ``warmup`` steps, then a cosine from 1 down to ``floor`` at ``total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# The layers whose weight matrices (and kernels) are decayed; every other parameter is not.
_DECAYED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def split_decay(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters of ``module``.

    Only the ``weight`` of a Linear or Conv layer decays. Everything else does not: biases,
    norm gains, and the tensors that are representations rather than maps (registers, learned
    position tables, embeddings), which weight decay would pull towards zero, i.e. towards
    "no register" and "no position". A rule by layer type, not by ``ndim``, because those
    tables are 2-D or more too.
    """
    decayed = {
        id(m.weight)
        for m in module.modules()
        if isinstance(m, _DECAYED_LAYERS) and isinstance(m.weight, nn.Parameter)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if id(p) in decayed else no_decay).append(p)
    return decay, no_decay


def build_optimizer(
    core: nn.Module,
    readout: Iterable[nn.Parameter],
    cfg: TrainConfig,
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW with the core at ``cfg.lr`` and readout/modulator at ``cfg.lr * readout_lr_ratio``.

    In the core only Linear and Conv weights decay (see :func:`split_decay`).

    The readout gets no weight decay: its features carry their own L1 penalty and its
    positions must not be pulled towards the centre of the frame.
    """
    decay, no_decay = split_decay(core)
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
