"""Per-session Gaussian readout (neuralpredictors' ``Gaussian2d`` idea), at every read-out step.

Each unit n has a position ``mu_n`` in the feature map's normalised coordinates ([-1, 1] over
the grid, ``(x, y)`` = (column, row) as ``F.grid_sample`` reads it), a spread ``sigma_n`` (one per
axis), a feature vector ``w_n`` (D,) and a bias ``b_n``::

    rate_n = g(w_n . f(p_n) + b_n) + 1e-6,   g = softplus (default), exp or ELU + 1

where ``f(p)`` is the bilinearly interpolated feature vector at ``p``, read at every time step
of the input. In training ``p_n = mu_n + sigma_n * eps`` with ``eps ~ N(0, I)`` drawn per sample
and per unit (each sample of the batch sees its own jitter, as neuralpredictors does; its time
steps share it); in evaluation ``p_n = mu_n``. A jittered position past the border reads the
border (``padding_mode="border"``). An optional ``shift`` (B, P, 2), the shifter's output for
each sample and read-out step, moves every unit's position by the same (dx, dy). ``mu`` itself
is kept between the centres of the feature map's outer cells (``|mu| < 1 - 1 / size`` per
axis, where bilinear sampling has a gradient) by :meth:`constrain_`, which the trainer calls
after every optimiser step: a position clamped only in the forward pass would leave a unit that
drifted past the border without a gradient to come back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.config import ReadoutConfig
from vivit_hpo.errors import ConfigError

__all__ = [
    "MU_INIT_RANGE",
    "RATE_FLOOR",
    "GaussianReadout",
    "inverse_output",
    "inverse_softplus",
    "module_keys",
    "output_nonlinearity",
]

MU_INIT_RANGE = 0.5  # initial positions are uniform in [-0.5, 0.5]^2, the central half
RATE_FLOOR = 1e-6  # keeps log(rate) finite when softplus underflows
_EXP_MAX = 20.0  # exp's input is capped here: e^20 spikes per bin is never a real rate


def inverse_softplus(y: Tensor) -> Tensor:
    """x with softplus(x) = y, for y > 0 (stable for small and large y)."""
    return y + torch.log(-torch.expm1(-y))


def output_nonlinearity(kind: str, x: Tensor) -> Tensor:
    """The readout's output nonlinearity ``g`` (``softplus``, ``exp`` or ``elu1``), > -1e-6."""
    if kind == "exp":
        return torch.exp(x.clamp_max(_EXP_MAX))
    if kind == "elu1":
        return F.elu(x) + 1.0
    return F.softplus(x)


def inverse_output(kind: str, y: Tensor) -> Tensor:
    """x with ``output_nonlinearity(kind, x) = y``, for y > 0."""
    if kind == "exp":
        return torch.log(y)
    if kind == "elu1":
        return torch.where(y >= 1.0, y - 1.0, torch.log(y))
    return inverse_softplus(y)


def module_keys(names: Iterable[str]) -> dict[str, str]:
    """Map session names to ``nn.ModuleDict`` keys.

    A ModuleDict key may not contain ".", be empty, or shadow a Module attribute ("train",
    "keys", ...); such names get ``_`` for the bad characters and an ``s_`` prefix, and clashes
    a numeric suffix. The mapping depends only on the names and their order.
    """
    reserved = set(dir(nn.ModuleDict()))
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        key = re.sub(r"[^0-9A-Za-z_]", "_", name)
        if not key or key in reserved or key != name:
            key = f"s_{key}"
        base, i = key, 1
        while key in used:
            key, i = f"{base}_{i}", i + 1
        out[name] = key
        used.add(key)
    return out


class GaussianReadout(nn.Module):
    """Gaussian readout of ``num_units`` units from (B, D, H, W) features.

    Args:
        num_units: N.
        in_dim: D, the core's channel count.
        cfg: readout config (init_sigma, bias_init, gamma_features).
        mean_rates: per-unit mean count per bin (N,), for ``bias_init="mean_rate"``.
        grid: (H', W') of the feature map it reads (bounds ``mu``); None: no bound inside [-1, 1].

    Parameters:
        mu (N, 2), sigma (N, 2), features (N, D), bias (N,).
    """

    def __init__(
        self,
        num_units: int,
        in_dim: int,
        cfg: ReadoutConfig,
        mean_rates: Sequence[float] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if num_units < 1:
            raise ConfigError(f"num_units={num_units}: a readout needs at least one unit")
        self.num_units, self.in_dim = num_units, in_dim
        # (x, y) bound of mu: just inside the centres of the outer columns and rows (at a centre
        # itself bilinear sampling has a one-sided, zero gradient towards the border).
        h, w = grid if grid is not None else (0, 0)
        self.limit = tuple(max(0.0, 1.0 - 1.02 / n) if n else 1.0 for n in (w, h))
        self.gamma_features = cfg.gamma_features
        self.output = cfg.output
        self.mu = nn.Parameter(torch.empty(num_units, 2).uniform_(-MU_INIT_RANGE, MU_INIT_RANGE))
        self.sigma = nn.Parameter(torch.full((num_units, 2), cfg.init_sigma))
        # Small enough that the initial rates sit at the bias (the core output has unit RMS).
        self.features = nn.Parameter(torch.randn(num_units, in_dim) * (0.1 / math.sqrt(in_dim)))
        self.bias = nn.Parameter(torch.zeros(num_units))
        if cfg.bias_init == "mean_rate":
            if mean_rates is None or len(mean_rates) != num_units:
                got = "none" if mean_rates is None else f"{len(mean_rates)}"
                raise ConfigError(
                    f"bias_init='mean_rate' needs {num_units} mean rates, got {got}; "
                    "pass the session's mean_rates or set readout.bias_init=zero"
                )
            rates = torch.tensor(mean_rates, dtype=torch.float32).clamp_min(1e-4)
            with torch.no_grad():
                self.bias.copy_(inverse_output(cfg.output, (rates - RATE_FLOOR).clamp_min(1e-4)))

    def positions(self, batch_size: int, sample: bool) -> Tensor:
        """(B, N, 2) read positions: mu jittered by sigma when ``sample``, else mu."""
        mu = self.mu[None].expand(batch_size, -1, -1)  # (B, N, 2)
        if sample:
            mu = mu + self.sigma * torch.randn_like(mu)
        return mu

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project ``mu`` back between the outer cell centres (after an optimiser step)."""
        for axis, bound in enumerate(self.limit):
            self.mu[:, axis].clamp_(-bound, bound)

    def forward(self, x: Tensor, sample: bool | None = None, shift: Tensor | None = None) -> Tensor:
        """Rates of the units at every time step of ``x``.

        Args:
            x: (B, D, P, H, W) features of the P read-out time steps.
            sample: jitter positions; None means ``self.training``.
            shift: (B, P, 2) (dx, dy) added to every unit's position at each sample and step
                (the shifter's output); None: no shift.

        Returns:
            (B, P, N) positive float32 rates.
        """
        b, d, p = x.shape[:3]
        sample = self.training if sample is None else sample
        pos = self.positions(b, sample)  # (B, N, 2)
        # fp32 even under bf16 autocast: a unit's drive is a sum over D channels, and a bf16
        # dot product (8 bits of mantissa) would round every rate by up to ~0.4%, a noise the
        # Poisson loss and the bits per spike then see. The features are read as they come
        # (bf16-rounded); only the interpolation and the dot product are widened.
        with torch.autocast(x.device.type, enabled=False):
            if shift is None:
                grid = pos[:, None].float()  # (B, 1, N, 2)
                # One grid_sample for every time step: the steps ride along as channels.
                flat = x.float().reshape(b, d * p, x.shape[3], x.shape[4])  # (B, D*P, H, W)
                feats = F.grid_sample(
                    flat, grid, mode="bilinear", padding_mode="border", align_corners=False
                )  # (B, D*P, 1, N)
                feats = feats.view(b, d, p, -1)  # (B, D, P, N)
            else:
                if shift.shape != (b, p, 2):
                    raise ValueError(f"shift of shape {tuple(shift.shape)}: expected {(b, p, 2)}")
                # Each step has its own positions: the steps ride along the batch instead.
                grid = (pos[:, None] + shift[:, :, None].to(pos.dtype)).float()  # (B, P, N, 2)
                flat = x.float().transpose(1, 2).flatten(0, 1)  # (B*P, D, H, W)
                feats = F.grid_sample(
                    flat,
                    grid.flatten(0, 1)[:, None],
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )  # (B*P, D, 1, N)
                feats = feats.view(b, p, d, -1).transpose(1, 2)  # (B, D, P, N)
            pre = torch.einsum("bdpn,nd->bpn", feats, self.features.float())  # (B, P, N)
            return output_nonlinearity(self.output, pre + self.bias.float()) + RATE_FLOOR

    def regularizer(self) -> Tensor:
        """``gamma_features * mean(|features|)`` (a scalar; 0 when gamma is 0).

        The mean, not the sum, so gamma means the same for sessions of different sizes."""
        return self.gamma_features * self.features.abs().mean()

    def extra_repr(self) -> str:
        return f"num_units={self.num_units}, in_dim={self.in_dim}"
