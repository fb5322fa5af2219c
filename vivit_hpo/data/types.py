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
    # Per behaviour channel, the training split's mean and standard deviation: behaviour is
    # standardised with them, for this session's recordings and for new stimuli alike.
    behavior_mean: tuple[float, ...] = ()
    behavior_std: tuple[float, ...] = ()
    behavior_names: tuple[str, ...] = ()  # K names (the shifter finds the pupil position)
    # The stimulus' mean and standard deviation over the training split's bins (all pixels and
    # channels, in stored units; see :func:`~vivit_hpo.data.session_file.stimulus_stats`): batches
    # carry ``frames / stim_std`` (not centred: see SessionSet.batch), whatever the file's dtype
    # or scale; the mean is kept for the record (`data inspect`, the run's sessions.json).
    stim_mean: float = 0.0
    stim_std: float = 1.0
    # What `robs` holds (the file's `response_kind`): "spikes" (counts, scored in bits per
    # spike) or "calcium" (dF/F or deconvolved traces: the same Poisson score is no bits per
    # spike, and the correlation leads). Runs trained before it existed read "spikes".
    response_kind: str = "spikes"


@dataclass
class Batch:
    """A batch of clips, all from one session (sessions differ in units and frame size).

    Clip i holds the frames (and behaviour) of F consecutive bins of one segment (one block, one
    split) and the counts of the P bins the model predicts from them (see
    :mod:`vivit_hpo.data.clips`); with F = L it is the plain window of L bins predicting its
    last bin (P = 1).
    """

    session: str
    stim: torch.Tensor  # (B, C, F, H, W) float32, standardised with the session's stim_mean/std
    behavior: torch.Tensor | None  # (B, F, K) float32, or None when the session has none
    robs: torch.Tensor  # (B, P, N) float32 counts of the predicted bins
    dfs: torch.Tensor  # (B, P, N) float32 1 where that count is valid (0 past a segment's end)
    bins: torch.Tensor  # (B, P) int64 predicted bins in the session's time axis, -1 if none
    num_targets: int  # predicted bins that lie inside their segment (bins >= 0), a host int

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
            num_targets=self.num_targets,
        )

    def __len__(self) -> int:
        return int(self.robs.shape[0])
