"""The types that cross the boundary between data, model and training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Batch", "SessionMeta"]


@dataclass(frozen=True)
class SessionMeta:
    """What a model needs to know of a session to build its readout and modulator."""

    name: str
    num_units: int
    num_channels: int  # C of the stimulus (1 for (T, H, W) files)
    height: int
    width: int
    num_behavior: int  # K; 0 when the file has no `behavior`
    frame_rate: float
    mean_rates: tuple[float, ...]  # per unit, spikes per bin on the training split (bias init)


@dataclass
class Batch:
    """A batch of samples, all from one session (sessions differ in units and frame size).

    Sample i is the window of bins ``bins[i] - L + 1 .. bins[i]`` of the session: the model sees
    those frames (and behaviour) and predicts the counts of bin ``bins[i]`` only.
    """

    session: str
    stim: torch.Tensor  # (B, C, L, H, W) float32; uint8 frames scaled to [0, 1]
    behavior: torch.Tensor | None  # (B, L, K) float32, or None when the session has none
    robs: torch.Tensor  # (B, N) float32 counts of the target bin
    dfs: torch.Tensor  # (B, N) float32 1 where that count is valid
    bins: torch.Tensor  # (B,) int64 index of the target bin in the session's time axis

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            session=self.session,
            stim=move(self.stim),
            behavior=None if self.behavior is None else move(self.behavior),
            robs=move(self.robs),
            dfs=move(self.dfs),
            bins=move(self.bins),
        )

    def __len__(self) -> int:
        return int(self.robs.shape[0])
