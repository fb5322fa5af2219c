"""The field's yardsticks: the lags-as-channels 2-D CNN and the linear-nonlinear (LN) core.

Both see a sample's ``num_lags`` frames through one first layer whose kernel spans all the lags
(a ``(L, k, k)`` convolution, "valid" in time): on a clip of F frames it computes, at every
frame t from ``L - 1`` on, the 2-D convolution of frames ``t - L + 1 .. t`` stacked as channels,
which is the classic model's input layer (Lurz et al. 2021, the Sensorium baselines,
neuralpredictors' ``Stacked2dCore``). Every later layer of the CNN is a per-frame 2-D
convolution. So the core's ``F - L + 1`` output steps are exactly the clip's targets (a window
of L frames: one), each depending on frames ``t - L + 1 .. t`` only, as the data contract asks:
to the encoder these are temporal tokens of kernel L and stride 1, and no frame without a full
history is computed.

Batch norm (the CNN's default, as in those baselines) pools its training statistics over the
batch's frames, which in clip mode include later frames of the same clip; evaluation uses the
running statistics and is strictly causal, so no score sees a future frame.
"""

from __future__ import annotations

from torch import Tensor, nn

from vivit_hpo.config import CNN2DConfig, LNConfig
from vivit_hpo.models.cnn import CausalConv3d
from vivit_hpo.models.layers import laplace_l2

__all__ = ["CNN2DCore", "LNCore", "cnn2d_grid", "cnn2d_layers", "laplace_l2"]


def cnn2d_grid(cfg: CNN2DConfig, height: int, width: int) -> tuple[int, int]:
    """(H', W') of every layer's output: the frame's, or without ``pad_input`` the first
    layer's "valid" output (the later layers keep it)."""
    if cfg.pad_input:
        return height, width
    k = cfg.kernels[0]
    return height - k + 1, width - k + 1


def cnn2d_layers(
    cfg: CNN2DConfig, in_channels: int, num_lags: int
) -> list[tuple[int, int, tuple[int, int, int]]]:
    """Every convolution of the CNN as (in, out, (k_t, k_h, k_w)), in order (for cost counts):
    the first spans the L lags, the others one frame."""
    layers = []
    prev, k_t = in_channels, num_lags
    for ch, k in zip(cfg.channels, cfg.kernels, strict=True):
        layers.append((prev, ch, (k_t, k, k)))
        prev, k_t = ch, 1
    return layers


class CNN2DCore(nn.Module):
    """Lags-as-channels 2-D CNN: conv, batch norm, ELU per layer (see the module docstring).

    Args:
        cfg: the CNN2D config.
        in_channels: C of the stimulus.
        num_lags: L, the frames the first layer spans.

    Attributes:
        out_dim: channels[-1].
    """

    def __init__(self, cfg: CNN2DConfig, in_channels: int, num_lags: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.channels[-1]
        self.time_kernel, self.time_stride = num_lags, 1  # one output step per full history
        layers: list[nn.Module] = []
        for i, (cin, cout, kernel) in enumerate(cnn2d_layers(cfg, in_channels, num_lags)):
            conv = CausalConv3d(
                cin,
                cout,
                kernel,
                bias=not cfg.batch_norm,
                pad_time=False,
                pad_space=i > 0 or cfg.pad_input,
            )
            layers.append(conv)
            if cfg.batch_norm:
                layers.append(nn.BatchNorm3d(cout))
            layers.append(nn.ELU())
        self.layers = nn.Sequential(*layers)
        first = self.layers[0]
        assert isinstance(first, CausalConv3d)
        self.first = first.conv

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the feature map: the frame's own ("same" padding throughout), or the
        first layer's "valid" output without ``pad_input``."""
        return cnn2d_grid(self.cfg, height, width)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, D, T - L + 1, H', W') (:meth:`output_grid`)."""
        out: Tensor = self.layers(x)
        return out

    def regularizer(self) -> Tensor:
        """``laplace`` x the first layer's normalised Laplace penalty (per lag and channel)."""
        return self.cfg.laplace * laplace_l2(self.first.weight)


class LNCore(nn.Module):
    """The LN model's linear stage: ``filters`` spatio-temporal filters over the lags.

    No bias (the readout has one) and no nonlinearity: the readout's output nonlinearity is the
    model's only one, so each unit's rate is a nonlinearity of a linear function of its
    stimulus history.

    Args:
        cfg: the LN config.
        in_channels: C of the stimulus.
        num_lags: L, the frames each filter spans.

    Attributes:
        out_dim: ``filters``.
    """

    def __init__(self, cfg: LNConfig, in_channels: int, num_lags: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.filters
        self.time_kernel, self.time_stride = num_lags, 1
        kernel = (num_lags, cfg.kernel, cfg.kernel)
        self.filter = CausalConv3d(in_channels, cfg.filters, kernel, pad_time=False)

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the feature map: the frame's own."""
        return height, width

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, filters, T - L + 1, H, W), linear in ``x``."""
        out: Tensor = self.filter(x)
        return out

    def regularizer(self) -> Tensor:
        """``laplace`` x the filters' normalised Laplace penalty (spatial smoothness)."""
        return self.cfg.laplace * laplace_l2(self.filter.conv.weight)
