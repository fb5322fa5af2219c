"""A ResNet-like 3D-CNN baseline core, causal in time.

Every temporal convolution is padded on the left only (``k_t - 1`` frames), and the norm is
per position over channels, so an output at time t depends on frames <= t in training and in
evaluation (a BatchNorm or a GroupNorm over time would mix future frames into the statistics).
Time is never strided: the output has as many time steps as the input.

Layout: a stem conv (``stem_kernel``, stride 1) to ``channels[0]``, then one stage per entry of
``channels`` with ``blocks_per_stage`` residual blocks each; the first block of every stage
after the first halves H and W (stride 2). Output (B, channels[-1], T, H', W').
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vivit_hpo.config import CNNConfig
from vivit_hpo.models.layers import conv3d

__all__ = ["CNNCore", "CausalConv3d", "ChannelNorm3d", "ResBlock3d", "cnn_layers"]


class CausalConv3d(nn.Module):
    """Conv3d padded causally in time (left only) and "same" in space (stride 1) or to
    ``ceil(H / stride)`` (stride 2).

    Args:
        in_channels, out_channels: channel counts.
        kernel: (k_t, k_h, k_w).
        spatial_stride: stride over H and W (time is never strided).
        bias: add a bias (False before a norm).
        pad_time: pad ``k_t - 1`` frames at the front (T outputs); False: "valid" in time, the
            ``T - k_t + 1`` outputs whose kernel lies inside the input (the first ends on frame
            ``k_t - 1``), causal all the same.
        pad_space: pad H and W to keep their size; False: "valid" in space (``H - k_h + 1``
            by ``W - k_w + 1`` outputs at stride 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        spatial_stride: int = 1,
        bias: bool = False,
        *,
        pad_time: bool = True,
        pad_space: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        front = kt - 1 if pad_time else 0
        ph, pw = (kh, kw) if pad_space else (1, 1)
        self.pad = ((pw - 1) // 2, pw // 2, (ph - 1) // 2, ph // 2, front, 0)
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=kernel,
            stride=(1, spatial_stride, spatial_stride),
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, ceil(H / s), ceil(W / s)) (``T - k_t + 1``
        steps without ``pad_time``).

        Where the kernel is one frame long, or spans the whole input without time padding (a
        window of the lags-as-channels CNN), the same sum runs on a CPU as a 2-D convolution
        (:func:`~vivit_hpo.models.layers.conv3d`): 1.6x for the CNN yardstick's training step on
        one thread. Longer kernels over longer inputs stay 3-D (the 2-D form's copies of each
        frame cost as much as it saves)."""
        kt, t = self.conv.kernel_size[0], x.shape[2]
        if kt == 1 or (self.pad[4] == 0 and t == kt):
            return conv3d(F.pad(x, self.pad), self.conv.weight, self.conv.bias, self.conv.stride)
        return self.conv(F.pad(x, self.pad))


class ChannelNorm3d(nn.Module):
    """LayerNorm over channels at each (t, h, w) of a (B, C, T, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, C, T, H, W)."""
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock3d(nn.Module):
    """``gelu(x + norm(conv(dropout(gelu(norm(conv(x)))))))`` with a 1x1x1 projection shortcut
    when the channel count or the resolution changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],
        spatial_stride: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel, spatial_stride)
        self.norm1 = ChannelNorm3d(out_channels)
        self.drop = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel)
        self.norm2 = ChannelNorm3d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or spatial_stride != 1:
            self.shortcut = CausalConv3d(in_channels, out_channels, (1, 1, 1), spatial_stride)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, H / s, W / s)."""
        y = self.drop(F.gelu(self.norm1(self.conv1(x))))
        return F.gelu(self.shortcut(x) + self.norm2(self.conv2(y)))


def cnn_layers(
    cfg: CNNConfig, in_channels: int
) -> list[tuple[int, int, tuple[int, int, int], int]]:
    """Every convolution of the core as (in, out, kernel, level), in order, where ``level`` is
    the number of stride-2 halvings of H and W at the conv's output (used for cost counts)."""
    layers = [(in_channels, cfg.channels[0], cfg.stem_kernel, 0)]
    prev = cfg.channels[0]
    for i, ch in enumerate(cfg.channels):
        for j in range(cfg.blocks_per_stage):
            stride = 2 if i > 0 and j == 0 else 1
            layers += [(prev, ch, cfg.kernel_size, i), (ch, ch, cfg.kernel_size, i)]
            if prev != ch or stride != 1:
                layers.append((prev, ch, (1, 1, 1), i))
            prev = ch
    return layers


class CNNCore(nn.Module):
    """ResNet-like causal 3D-CNN core (see the module docstring).

    Args:
        cfg: the CNN config.
        in_channels: C of the stimulus.

    Attributes:
        out_dim: channels[-1].
    """

    def __init__(self, cfg: CNNConfig, in_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.channels[-1]
        self.time_kernel, self.time_stride = 1, 1  # one output step per frame
        self.stem = nn.Sequential(
            CausalConv3d(in_channels, cfg.channels[0], cfg.stem_kernel),
            ChannelNorm3d(cfg.channels[0]),
            nn.GELU(),
        )
        blocks: list[nn.Module] = []
        prev = cfg.channels[0]
        for i, ch in enumerate(cfg.channels):
            for j in range(cfg.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ResBlock3d(prev, ch, cfg.kernel_size, stride, cfg.dropout))
                prev = ch
        self.blocks = nn.Sequential(*blocks)

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the feature map for frames of ``height`` x ``width``."""
        for _ in range(len(self.cfg.channels) - 1):
            height, width = -(-height // 2), -(-width // 2)
        return height, width

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, D, T, H', W'), H' = ceil(H / 2^(stages - 1))."""
        return self.blocks(self.stem(x))
