"""ConvGRU behaviour modulator: a multiplicative gain on the core's last-step features.

For a session with K > 0 behaviour channels::

    b_t  = pool_T'(W_session behaviour)     (B, hidden, T')      per-session K -> hidden
    u_t  = W_feat features_t + b_t          (B, hidden, H', W')  b_t broadcast over the grid
    h_t  = ConvGRU(u_t, h_{t-1}), h_0 = 0   (B, hidden, H', W')  shared across sessions
    gain = W_gain h_T'                      (B, D, H', W')       zero-initialised
    out  = features_T' * (1 + gain)

The behaviour (L frames) is average-pooled to the core's T' time steps (``adaptive_avg_pool1d``);
every frame of a sample is in the past of its target bin, so pooling never leaks the future.
The features enter the GRU input so the gain can differ across the grid (a behaviour signal
alone is the same at every position). ``W_gain`` starts at zero, so the modulator starts as the
identity and training decides how much behaviour matters. Sessions without behaviour (K = 0)
get no modulation: the last-step features pass through unchanged.
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
        cfg: modulator config (hidden_dim, kernel_size).
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
        self.gain = nn.Conv2d(hidden, feature_dim, kernel_size=1)
        nn.init.zeros_(self.gain.weight)
        if self.gain.bias is not None:
            nn.init.zeros_(self.gain.bias)

    def modulates(self, session: str) -> bool:
        """True when ``session`` has behaviour channels (and so a gain)."""
        return session in self.behavior_dims

    def forward(self, features: Tensor, behavior: Tensor | None, session: str) -> Tensor:
        """Gain-modulated features of the last time step.

        Args:
            features: (B, D, T', H', W') core output.
            behavior: (B, L, K) behaviour of the sample's frames; ignored (may be None) for a
                session without behaviour.
            session: session name.

        Returns:
            (B, D, H', W').
        """
        last = features[:, :, -1]  # (B, D, H', W')
        if not self.modulates(session):
            return last
        k = self.behavior_dims[session]
        if behavior is None or behavior.ndim != 3 or behavior.shape[-1] != k:
            got = "None" if behavior is None else tuple(behavior.shape)
            raise DataError(
                f"session {session!r} has {k} behaviour channels: expected behavior of shape "
                f"(B, L, {k}), got {got}"
            )
        t = features.shape[2]
        beh = self.behavior_proj[self._keys[session]](behavior.to(features.dtype))  # (B, L, h)
        beh = F.adaptive_avg_pool1d(beh.transpose(1, 2), t)  # (B, h, T')
        u = self.feature_proj(features) + beh[..., None, None]  # (B, h, T', H', W')
        h = u.new_zeros(u.shape[0], u.shape[1], u.shape[3], u.shape[4])  # (B, h, H', W')
        for i in range(t):
            h = self.cell(u[:, :, i], h)
        return last * (1 + self.gain(h))  # (B, D, H', W')
