"""ConvGRU behaviour modulator: a multiplicative gain on the core's features, step by step.

For a session with K > 0 behaviour channels and the core's T' temporal tokens::

    b_t  = W_session behaviour_t             (B, hidden, T')      per-session K -> hidden
    u_t  = W_feat features_t + b_t           (B, hidden, H', W')  b_t broadcast over the grid
    h_t  = ConvGRU(u_t, h_{t-1}), h_0 = 0    (B, hidden, H', W')  shared across sessions
    gain_t = g * tanh(W_gain h_t)            (B, D, H', W')       W_gain zero-initialised
    out_t  = features_t * (1 + gain_t)       for the read-out steps t >= first

``behaviour_t`` is the behaviour averaged over the frames of token t (the encoder pools it with
the core's own temporal tubelets, so it never holds a frame after the token's last). The GRU runs
once over the clip's tokens, causal by construction. The features enter the GRU input so the gain
can differ across the grid (a behaviour signal alone is the same at every position). ``W_gain``
starts at zero, so the modulator starts as the identity and training decides how much behaviour
matters. The tanh bounds the gain to [1 - g, 1 + g] (g = ``max_gain`` <= 1): an unbounded
gain could grow without limit or turn negative and flip a feature's sign. Sessions without
behaviour (K = 0) get no modulation: the features pass through.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.config import ModulatorConfig
from vivit_hpo.errors import DataError
from vivit_hpo.models.readout import module_keys

__all__ = ["ConvGRUCell", "ConvGRUModulator"]


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell on (B, C, H, W) maps ("same" padding).

    Args:
        in_channels: channels of the input u_t.
        hidden: channels of the state h_t.
        kernel_size: odd or even square kernel.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        k = kernel_size
        self.pad = ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, k)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, k)

    def forward(self, u: Tensor, h: Tensor) -> Tensor:
        """u (B, C_in, H, W), h (B, hidden, H, W) -> new h (B, hidden, H, W)."""
        zr = torch.sigmoid(self.gates(F.pad(torch.cat([u, h], 1), self.pad)))  # (B, 2h, H, W)
        z, r = zr.chunk(2, dim=1)
        n = torch.tanh(self.candidate(F.pad(torch.cat([u, r * h], 1), self.pad)))
        return (1 - z) * h + z * n


class ConvGRUModulator(nn.Module):
    """Behaviour-driven gain on the core features (see the module docstring).

    Args:
        feature_dim: D of the core output.
        cfg: modulator config (hidden_dim, kernel_size, max_gain).
        behavior_dims: {session name: K}; sessions with K = 0 are left out (no modulation).
    """

    def __init__(
        self, feature_dim: int, cfg: ModulatorConfig, behavior_dims: Mapping[str, int]
    ) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        self.behavior_dims = {name: k for name, k in behavior_dims.items() if k > 0}
        self._keys = module_keys(self.behavior_dims)
        self.behavior_proj = nn.ModuleDict(
            {self._keys[name]: nn.Linear(k, hidden) for name, k in self.behavior_dims.items()}
        )
        self.feature_proj = nn.Conv3d(feature_dim, hidden, kernel_size=1)
        self.cell = ConvGRUCell(hidden, hidden, cfg.kernel_size)
        self.max_gain = cfg.max_gain
        self.gain = nn.Conv2d(hidden, feature_dim, kernel_size=1)
        nn.init.zeros_(self.gain.weight)
        if self.gain.bias is not None:
            nn.init.zeros_(self.gain.bias)

    def modulates(self, session: str) -> bool:
        """True when ``session`` has behaviour channels (and so a gain)."""
        return session in self.behavior_dims

    def forward(
        self, features: Tensor, behavior: Tensor | None, session: str, first: int = 0
    ) -> Tensor:
        """Gain-modulated features of the read-out steps.

        Args:
            features: (B, D, T', H', W') core output.
            behavior: (B, T', K) behaviour of each temporal token (see the module docstring);
                ignored (may be None) for a session without behaviour.
            session: session name.
            first: the first step to return (the steps before only feed the GRU's state).

        Returns:
            (B, D, T' - first, H', W').
        """
        if not self.modulates(session):
            return features[:, :, first:]
        k = self.behavior_dims[session]
        t = features.shape[2]
        if behavior is None or behavior.shape != (features.shape[0], t, k):
            got = "None" if behavior is None else tuple(behavior.shape)
            raise DataError(
                f"session {session!r} has {k} behaviour channels: expected behavior of shape "
                f"(B, T', K) = {(features.shape[0], t, k)}, got {got}"
            )
        beh = self.behavior_proj[self._keys[session]](behavior.to(features.dtype))  # (B, T', h)
        u = self.feature_proj(features) + beh.transpose(1, 2)[..., None, None]  # (B, h, T', H', W')
        h = u.new_zeros(u.shape[0], u.shape[1], u.shape[3], u.shape[4])  # (B, h, H', W')
        states = []
        for i in range(t):
            h = self.cell(u[:, :, i], h)
            if i >= first:
                states.append(h)
        hs = torch.stack(states, dim=1).flatten(0, 1)  # (B*P, h, H', W')
        gain = self.max_gain * torch.tanh(self.gain(hs))  # (B*P, D, H', W') in [-g, g]
        gain = gain.unflatten(0, (features.shape[0], t - first))  # (B, P, D, H', W')
        return features[:, :, first:] * (1 + gain.transpose(1, 2))  # (B, D, P, H', W')
