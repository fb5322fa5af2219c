"""An exponential moving average (EMA) of a model's weights, for validation and checkpoints.

Hand-written rather than ``torch.optim.swa_utils.AveragedModel``: that one decides its first
update with ``bool(n_averaged == 0)``, a host sync per step on CUDA, and wraps the model (its
state_dict keys gain a ``module.`` prefix), where the best checkpoints must hold a plain
model's state_dict that ``load_run`` reads unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "ema_decay_at"]


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th update (1-based): ``min(decay, (1 + n) / (10 + n))``.

    The ramp (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``) keeps the early
    average from being mostly the initial weights: with decay 0.999 and a few hundred steps per
    epoch, a plain EMA would validate (and prune a trial on) weights barely trained.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """``average = d * average + (1 - d) * model`` over every parameter and floating buffer.

    Args:
        model: the model being trained; the average starts as a copy of it (make it before
            ``compile``), on the same device, without gradients.
        decay: the long-run decay ``d`` (see :func:`ema_decay_at` for its first updates).

    Attributes:
        average: the averaged model, the same class as ``model``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = copy.deepcopy(model).requires_grad_(False)
        self.average.eval()

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mine = [*self.average.parameters(), *self.average.buffers()]
        theirs = [*model.parameters(), *model.buffers()]
        assert len(mine) == len(theirs), "the EMA and the model differ in structure"
        return mine, theirs

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Move the average towards ``model`` after its ``updates``-th optimiser step.

        On the device, no host sync: the decay is a Python number.
        """
        weight = 1.0 - ema_decay_at(self.decay, updates)
        mine, theirs = self._pairs(model)
        floats = [(a, b) for a, b in zip(mine, theirs, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], weight)
        for a, b in zip(mine, theirs, strict=True):
            if not a.is_floating_point():
                a.copy_(b)  # counters and integer buffers follow the model

    def state_dict(self) -> dict[str, Any]:
        """The averaged model's ``state_dict`` (the keys of the model's own)."""
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)
