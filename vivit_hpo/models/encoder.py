"""The encoding model: a shared core, a behaviour modulator and one readout per session."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vivit_hpo.config import ModelConfig
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import ConfigError, DataError
from vivit_hpo.models.budget import check_feasible
from vivit_hpo.models.cnn import CNNCore
from vivit_hpo.models.modulator import ConvGRUModulator
from vivit_hpo.models.readout import GaussianReadout, module_keys
from vivit_hpo.models.vivit import AttentionMaps, ViViTCore

__all__ = ["EncodingModel", "build_model", "collect_attention"]


def _check_sessions(cfg: ModelConfig, sessions: Sequence[SessionMeta], num_lags: int) -> int:
    """Validate the sessions against each other and the config; returns the channel count C."""
    if not sessions:
        raise ConfigError("no sessions to build a model for; pass at least one session")
    names = [s.name for s in sessions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"session names must be unique, repeated: {', '.join(dupes)}")
    channels = {s.num_channels for s in sessions}
    if len(channels) > 1:
        listing = ", ".join(f"{s.name} has C={s.num_channels}" for s in sessions)
        raise ConfigError(
            f"sessions disagree on stimulus channels ({listing}); the shared core needs one "
            "channel count: train sessions with different C in separate runs"
        )
    for s in sessions:
        reason = check_feasible(cfg, (s.num_channels, num_lags, s.height, s.width))
        if reason is not None:
            raise ConfigError(f"session {s.name!r}: {reason}")
    return channels.pop()


class EncodingModel(nn.Module):
    """Predicts the spike counts of the target bin from a stimulus window and behaviour.

    ``rates = readout_session(modulator(core(stim), behavior))`` where the readout reads the
    core's last time step (the window ends at the target bin).

    Args:
        cfg: model config (``cfg.core.kind`` picks the ViViT or the CNN core).
        sessions: the sessions to read out (frame sizes, units and K may all differ; the
            channel count C must be the same).
        num_lags: L, frames per sample.

    Attributes:
        core: ``ViViTCore`` or ``CNNCore``, output (B, D, T', H', W').
        readouts: ``nn.ModuleDict`` of :class:`GaussianReadout`; keys are session names made
            safe for ModuleDict (see ``readout.module_keys``); use :meth:`readout` by name.
        modulator: :class:`ConvGRUModulator`, or None when disabled or no session has behaviour.
        sessions: {name: SessionMeta}.
    """

    def __init__(self, cfg: ModelConfig, sessions: Sequence[SessionMeta], num_lags: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_lags = num_lags
        self.in_channels = _check_sessions(cfg, sessions, num_lags)
        self.sessions = {s.name: s for s in sessions}
        self.core: ViViTCore | CNNCore
        if cfg.core.kind == "vivit":
            max_input = (num_lags, max(s.height for s in sessions), max(s.width for s in sessions))
            self.core = ViViTCore(cfg.core, self.in_channels, max_input)
        else:
            self.core = CNNCore(cfg.core, self.in_channels)
        dim = self.core.out_dim
        self._keys = module_keys(self.sessions)
        self.readouts = nn.ModuleDict(
            {
                self._keys[s.name]: GaussianReadout(s.num_units, dim, cfg.readout, s.mean_rates)
                for s in sessions
            }
        )
        behavior_dims = {s.name: s.num_behavior for s in sessions if s.num_behavior > 0}
        self.modulator: ConvGRUModulator | None = None
        if cfg.modulator.enabled and behavior_dims:
            self.modulator = ConvGRUModulator(dim, cfg.modulator, behavior_dims)

    def readout(self, session: str) -> GaussianReadout:
        """The readout of ``session`` (DataError for an unknown session)."""
        if session not in self._keys:
            raise DataError(
                f"session {session!r} is not one of the model's sessions "
                f"({', '.join(self._keys)}); rebuild the model with it"
            )
        out = self.readouts[self._keys[session]]
        assert isinstance(out, GaussianReadout)
        return out

    def forward(self, stim: Tensor, session: str, behavior: Tensor | None = None) -> Tensor:
        """Rates of the target bin.

        Args:
            stim: (B, C, L, H, W) frames of the window, the target bin last.
            session: session name (picks the readout and the behaviour projection).
            behavior: (B, L, K) behaviour over the window; required when the modulator is on
                and the session has K > 0, ignored otherwise.

        Returns:
            (B, N) positive float32 rates of the session's units.
        """
        readout = self.readout(session)
        if stim.ndim != 5 or stim.shape[1] != self.in_channels:
            raise DataError(
                f"stim of shape {tuple(stim.shape)} for session {session!r}: expected "
                f"(B, {self.in_channels}, L, H, W)"
            )
        features = self.core(stim)  # (B, D, T', H', W')
        if self.modulator is not None and self.modulator.modulates(session):
            last = self.modulator(features, behavior, session)  # (B, D, H', W')
        else:
            last = features[:, :, -1]  # (B, D, H', W')
        rates: Tensor = readout(last)  # (B, N)
        return rates

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(core parameters, readout + modulator parameters), for separate learning rates."""
        head = list(self.readouts.parameters())
        if self.modulator is not None:
            head += list(self.modulator.parameters())
        return list(self.core.parameters()), head

    def regularizer(self, session: str) -> Tensor:
        """Scalar penalty to add to the loss of a batch of ``session`` (readout feature L1)."""
        return self.readout(session).regularizer()


def build_model(cfg: ModelConfig, sessions: Sequence[SessionMeta], num_lags: int) -> EncodingModel:
    """Build the encoding model for ``sessions``.

    Raises:
        ConfigError: no sessions, repeated names, sessions that disagree on the channel count
            C, or a session whose input (C, num_lags, H, W) the core cannot take (the reason
            from :func:`check_feasible`, naming the session).
    """
    return EncodingModel(cfg, sessions, num_lags)


@torch.no_grad()
def collect_attention(model: EncodingModel | ViViTCore, stim: Tensor) -> AttentionMaps:
    """Per-layer attention maps of the ViViT core on ``stim`` (B, C, L, H, W), batch-averaged.

    Runs in eval mode (no patch dropout, no dropout; the model's mode is restored afterwards)
    with the math attention path, so the maps are exact probabilities. The core alone decides
    attention, so no session or behaviour is needed.
    """
    core = model.core if isinstance(model, EncodingModel) else model
    if not isinstance(core, ViViTCore):
        raise ConfigError(
            f"attention maps need a ViViT core, this model's core is {type(core).__name__}"
        )
    was_training = core.training
    core.eval()
    try:
        _, maps = core(stim, return_attention=True)
    finally:
        core.train(was_training)
    return maps
