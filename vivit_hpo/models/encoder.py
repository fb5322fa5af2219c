"""The encoding model: a shared core, a behaviour modulator and one readout per session.

The model takes a clip of F frames (:mod:`vivit_hpo.data.clips`) and predicts every bin that one
of the core's temporal tokens ends on with at least ``num_lags`` frames of history in the clip:
``(B, C, F, H, W) -> (B, P, N)`` rates. The core is causal in time (the ViViT when
``causal: true``, the CNN cores and the LN always), so each prediction depends on frames up to
its own bin only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.config import ModelConfig, RunConfig
from vivit_hpo.data.clips import ClipGeometry
from vivit_hpo.data.types import SessionMeta
from vivit_hpo.errors import ConfigError, DataError
from vivit_hpo.models.budget import check_feasible
from vivit_hpo.models.cnn import CNNCore
from vivit_hpo.models.cnn2d import CNN2DCore, LNCore
from vivit_hpo.models.modulator import ConvGRUModulator
from vivit_hpo.models.readout import GaussianReadout, module_keys
from vivit_hpo.models.shifter import Shifter, pupil_channels
from vivit_hpo.models.vivit import AttentionMaps, ViViTCore, temporal_tokens

__all__ = [
    "EncodingModel",
    "build_model",
    "clip_geometry",
    "collect_attention",
    "pool_time",
    "token_ends",
]


def clip_geometry(cfg: RunConfig) -> ClipGeometry:
    """The clips a run trains and is evaluated on: ``data.clip_frames`` rounded to the core's
    temporal stride (the CNN cores and the LN predict every bin; None: one target per
    window)."""
    core = cfg.model.core
    stride = core.stride[0] if core.kind == "vivit" else 1
    return ClipGeometry.make(cfg.data.num_lags, cfg.data.clip_frames, stride)


def token_ends(frames: int, kernel: int, stride: int) -> list[int]:
    """The clip frame each temporal token ends on (the last one ends on frame ``frames - 1``)."""
    tokens, pad = temporal_tokens(frames, kernel, stride)
    return [j * stride + kernel - 1 - pad for j in range(tokens)]


def pool_time(x: Tensor, kernel: int, stride: int) -> Tensor:
    """(B, F, K) per-frame values -> (B, T', K) the mean over the real frames of each temporal
    token's tubelet (front padding left out), so a token's value never holds a later frame."""
    if kernel == 1 and stride == 1:
        return x
    frames = x.shape[1]
    _, pad = temporal_tokens(frames, kernel, stride)
    ones = x.new_ones(1, 1, frames)
    summed = F.avg_pool1d(F.pad(x.transpose(1, 2), (pad, 0)), kernel, stride)  # (B, K, T')
    count = F.avg_pool1d(F.pad(ones, (pad, 0)), kernel, stride)  # (1, 1, T')
    return (summed / count).transpose(1, 2)


def _check_sessions(cfg: ModelConfig, sessions: Sequence[SessionMeta], clips: ClipGeometry) -> int:
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
        shape = (s.num_channels, clips.frames, s.height, s.width)
        reason = check_feasible(cfg, shape, num_lags=clips.num_lags)
        if reason is not None:
            raise ConfigError(f"session {s.name!r}: {reason}")
    return channels.pop()


class EncodingModel(nn.Module):
    """Predicts spike counts at every read-out step of a clip from its frames and behaviour.

    ``rates = readout_session(modulator(core(stim), behavior))`` at each temporal token that
    ends with at least ``num_lags`` frames of history in the clip (a window of ``num_lags``
    frames: its last token only). With ``cfg.behavior_tokens`` the core also takes
    ``behavior_embed_session(behavior)`` per temporal token; with ``cfg.shifter`` the readout
    positions move by ``shifter(pupil position)`` at each read-out step.

    Args:
        cfg: model config (``cfg.core.kind`` picks the ViViT, the 3-D CNN, the lags-as-channels
            2-D CNN or the LN core).
        sessions: the sessions to read out (frame sizes, units and K may all differ; the
            channel count C must be the same).
        clips: the clip geometry (an ``int`` L: one target per window of L frames).

    Attributes:
        core: ``ViViTCore``, ``CNNCore``, ``CNN2DCore`` or ``LNCore``, output
            (B, D, T', H', W').
        readouts: ``nn.ModuleDict`` of :class:`GaussianReadout`; keys are session names made
            safe for ModuleDict (see ``readout.module_keys``); use :meth:`readout` by name.
        modulator: :class:`ConvGRUModulator`, or None when disabled or no session has behaviour.
        behavior_embed: ``nn.ModuleDict`` of per-session MLPs K -> D (``cfg.behavior_tokens``,
            sessions with behaviour only), or None.
        shifter: :class:`Shifter`, or None when off or no session names a pupil position.
        pupil: {session name: (x, y) behaviour channel indices} of the shifted sessions.
        sessions: {name: SessionMeta}.
    """

    def __init__(
        self, cfg: ModelConfig, sessions: Sequence[SessionMeta], clips: ClipGeometry | int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.clips = clips if isinstance(clips, ClipGeometry) else ClipGeometry.window(clips)
        self.num_lags = self.clips.num_lags
        self.in_channels = _check_sessions(cfg, sessions, self.clips)
        self.sessions = {s.name: s for s in sessions}
        self.core: ViViTCore | CNNCore | CNN2DCore | LNCore
        core = cfg.core
        if core.kind == "vivit":
            frames = self.clips.frames
            max_input = (frames, max(s.height for s in sessions), max(s.width for s in sessions))
            self.core = ViViTCore(core, self.in_channels, max_input)
        elif core.kind == "cnn":
            self.core = CNNCore(core, self.in_channels)
        elif core.kind == "cnn2d":
            self.core = CNN2DCore(core, self.in_channels, self.num_lags)
        else:
            self.core = LNCore(core, self.in_channels, self.num_lags)
        dim = self.core.out_dim
        self._keys = module_keys(self.sessions)
        self.readouts = nn.ModuleDict(
            {
                self._keys[s.name]: GaussianReadout(
                    s.num_units,
                    dim,
                    cfg.readout,
                    s.mean_rates,
                    grid=self.core.output_grid(s.height, s.width),
                )
                for s in sessions
            }
        )
        behavior_dims = {s.name: s.num_behavior for s in sessions if s.num_behavior > 0}
        self.modulator: ConvGRUModulator | None = None
        if cfg.modulator.enabled and behavior_dims:
            self.modulator = ConvGRUModulator(dim, cfg.modulator, behavior_dims)
        self.behavior_embed: nn.ModuleDict | None = None
        if cfg.behavior_tokens and behavior_dims:
            self.behavior_embed = nn.ModuleDict(
                {self._keys[n]: _behavior_mlp(k, dim) for n, k in behavior_dims.items()}
            )
        self.unit_gain: nn.ModuleDict | None = None
        if cfg.unit_gain and behavior_dims:
            self.unit_gain = nn.ModuleDict(
                {
                    self._keys[n]: UnitGain(k, self.sessions[n].num_units)
                    for n, k in behavior_dims.items()
                }
            )
        self.pupil: dict[str, tuple[int, int]] = {}
        if cfg.shifter:
            for s in sessions:
                found = pupil_channels(s.behavior_names) if s.num_behavior else None
                if found is not None and len(s.behavior_names) == s.num_behavior:
                    self.pupil[s.name] = found
        self.shifter = Shifter(cfg.shifter_hidden) if self.pupil else None

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

    def first_target(self, frames: int) -> int:
        """Index of the first temporal token of a ``frames``-frame clip that is read out (the
        first one ending with at least ``num_lags`` frames of history)."""
        ends = token_ends(frames, self.core.time_kernel, self.core.time_stride)
        for j, e in enumerate(ends):
            if e >= self.num_lags - 1:
                return j
        raise DataError(f"a clip of {frames} frames is shorter than num_lags={self.num_lags}")

    def forward(self, stim: Tensor, session: str, behavior: Tensor | None = None) -> Tensor:
        """Rates of the clip's predicted bins.

        Args:
            stim: (B, C, F, H, W) frames of the clip.
            session: session name (picks the readout and the behaviour projection).
            behavior: (B, F, K) behaviour of the clip's frames; required when the modulator is
                on and the session has K > 0, ignored otherwise.

        Returns:
            (B, P, N) positive float32 rates of the session's units at the P read-out tokens
            (for a clip of ``self.clips.frames`` frames, the bins ``self.clips.offsets``).
        """
        readout = self.readout(session)
        if stim.ndim != 5 or stim.shape[1] != self.in_channels:
            raise DataError(
                f"stim of shape {tuple(stim.shape)} for session {session!r}: expected "
                f"(B, {self.in_channels}, F, H, W)"
            )
        first = self.first_target(stim.shape[2])
        beh = None
        if behavior is not None:
            beh = pool_time(behavior, self.core.time_kernel, self.core.time_stride)  # (B, T', K)
        key = self._keys[session]
        if self.behavior_embed is not None and key in self.behavior_embed:
            assert isinstance(self.core, ViViTCore)
            context = self.behavior_embed[key](self._session_behavior(session, beh))
            features = self.core(stim, context=context)  # (B, D, T', H', W')
        else:
            features = self.core(stim)  # (B, D, T', H', W')
        if self.modulator is not None and self.modulator.modulates(session):
            feats = self.modulator(features, beh, session, first)  # (B, D, P, H', W')
        else:
            feats = features[:, :, first:]  # (B, D, P, H', W')
        shift = None
        if self.shifter is not None and session in self.pupil:
            pupil = self._session_behavior(session, beh)[:, first:, list(self.pupil[session])]
            shift = self.shifter(pupil)  # (B, P, 2)
        rates: Tensor = readout(feats, shift=shift)  # (B, P, N)
        if self.unit_gain is not None and key in self.unit_gain:
            rates = self.unit_gain[key](rates, self._session_behavior(session, beh)[:, first:])
        return rates

    def _session_behavior(self, session: str, beh: Tensor | None) -> Tensor:
        """The pooled behaviour (B, T', K) of a session that has K > 0 channels (DataError when
        it is missing or has the wrong K)."""
        k = self.sessions[session].num_behavior
        if beh is None or beh.shape[-1] != k:
            got = "None" if beh is None else tuple(beh.shape)
            raise DataError(
                f"session {session!r} has {k} behaviour channels: pass behavior of shape "
                f"(B, F, {k}), got pooled {got}"
            )
        return beh

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(core parameters, per-session and behaviour parameters: readouts, modulator,
        behaviour embeddings, shifter), for separate learning rates."""
        head = list(self.readouts.parameters())
        for part in (self.modulator, self.behavior_embed, self.shifter, self.unit_gain):
            if part is not None:
                head += list(part.parameters())
        return list(self.core.parameters()), head

    def constrain_(self) -> None:
        """Keep constrained parameters in range after an optimiser step (readout positions)."""
        for readout in self.readouts.values():
            assert isinstance(readout, GaussianReadout)
            readout.constrain_()

    def regularizer(self, session: str) -> Tensor:
        """Scalar penalty to add to the loss of a batch of ``session``: the readout's feature
        L1, and the first layer's smoothness penalty of the ViViT, 2-D CNN and LN cores."""
        penalty = self.readout(session).regularizer()
        if isinstance(self.core, ViViTCore | CNN2DCore | LNCore):
            penalty = penalty + self.core.regularizer()
        return penalty


class UnitGain(nn.Module):
    """Per-unit gain modulation of one session's rates by its behaviour:
    ``rates * exp(bound * tanh((W b_t + c) / bound))``, W (N, K) and c zero-initialised (gain 1
    at the start), the log-gain kept within ``+-bound``. Computed in fp32, as the readout."""

    def __init__(self, num_behavior: int, num_units: int, bound: float = 3.0) -> None:
        super().__init__()
        self.proj = nn.Linear(num_behavior, num_units)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.bound = bound

    def forward(self, rates: Tensor, behavior: Tensor) -> Tensor:
        """rates (B, P, N), behavior (B, P, K) of the same read-out steps -> (B, P, N)."""
        with torch.autocast(rates.device.type, enabled=False):
            log_gain = self.proj(behavior.float())  # (B, P, N)
            log_gain = self.bound * torch.tanh(log_gain / self.bound)
            return rates.float() * log_gain.exp()


def _behavior_mlp(k: int, dim: int) -> nn.Sequential:
    """Per-session behaviour embedding ``K -> D -> D`` (GELU), small so the core starts close
    to the one without behaviour."""
    mlp = nn.Sequential(nn.Linear(k, dim), nn.GELU(), nn.Linear(dim, dim))
    for layer in (mlp[0], mlp[2]):
        assert isinstance(layer, nn.Linear)
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


def build_model(
    cfg: ModelConfig, sessions: Sequence[SessionMeta], clips: ClipGeometry | int
) -> EncodingModel:
    """Build the encoding model for ``sessions`` and clips of ``clips`` (an ``int`` L: windows).

    Raises:
        ConfigError: no sessions, repeated names, sessions that disagree on the channel count
            C, or a session whose input (C, F, H, W), F the clip's frames, the core cannot take
            (the reason from :func:`check_feasible`, naming the session).
    """
    return EncodingModel(cfg, sessions, clips)


@torch.no_grad()
def collect_attention(model: EncodingModel | ViViTCore, stim: Tensor) -> AttentionMaps:
    """Per-layer attention maps of the ViViT core on ``stim`` (B, C, L, H, W), batch-averaged.

    Runs in eval mode (no patch dropout, no dropout; the model's mode is restored afterwards)
    with the math attention path, so the maps are exact probabilities. The core alone decides
    attention, so no session or behaviour is needed (with ``behavior_tokens`` the maps are
    those of the core without the behaviour embedding added).
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
