"""The ViViT core's tubelet tokenizer: its token grid and padding rule, the tokenizer (a full
or space-time separable Conv3d) and the optional causal conv stem before it."""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from vivit_hpo.models.cnn import CausalConv3d, ChannelNorm3d
from vivit_hpo.models.layers import conv3d

__all__ = ["ConvStem", "Triple", "TubeletTokenizer", "temporal_tokens", "tubelet_grid"]

Triple = tuple[int, int, int]


def _axis_tokens(n: int, k: int, s: int) -> tuple[int, int]:
    """(tokens, total padding) along one axis so the tokens tile ``n`` exactly after padding."""
    tokens = 1 if n <= k else math.ceil((n - k) / s) + 1
    return tokens, (tokens - 1) * s + k - n


def temporal_tokens(frames: int, kernel: int, stride: int) -> tuple[int, int]:
    """(tokens, front padding) of ``frames`` frames cut into tubelets of ``kernel`` frames every
    ``stride`` (the tokenizer's rule along time, see :func:`tubelet_grid`)."""
    return _axis_tokens(frames, kernel, stride)


def tubelet_grid(
    size: tuple[int, int, int], kernel: tuple[int, int, int], stride: tuple[int, int, int]
) -> tuple[tuple[int, int, int], tuple[int, int, int, int, int]]:
    """Token grid and padding of the tubelet tokenizer for an input of ``size`` (T, H, W).

    Time is padded at the front only, so the last token ends exactly on the last frame (the
    newest token sees the newest frame; causality never needs a future frame). Height and width
    are padded symmetrically (the extra pixel, if odd, at the end) so the token grid stays
    centred on the frame, which keeps the readout's [-1, 1] coordinates on the frame's centre.

    Returns:
        ((T_p, H_p, W_p), (front, top, bottom, left, right)) padding in frames/pixels.
    """
    (tp, pt), (hp, ph), (wp, pw) = (
        _axis_tokens(n, k, s) for n, k, s in zip(size, kernel, stride, strict=True)
    )
    return (tp, hp, wp), (pt, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)


class TubeletTokenizer(nn.Module):
    """Non-overlapping (or overlapping, stride < kernel) tubelet embedding by a Conv3d.

    Works for any T, H, W (see :func:`tubelet_grid` for the padding rule). With ``rank`` the
    (T, H, W) kernel is a sum of ``rank`` space-time separable ones: ``rank`` spatial filters
    (1, H, W) over each frame, then a temporal conv (T, 1, 1) that mixes their time courses into
    the D channels (the same linear map as the full Conv3d, of rank at most ``rank`` between
    space and time; visual receptive fields are close to separable).

    Args:
        in_channels: C of the stimulus.
        dim: embedding width D.
        kernel, stride: (T, H, W) tubelet size and step.
        rank: spatial filters of the separable form; None for the full Conv3d.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int],
        rank: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        kt, kh, kw = kernel
        st, sh, sw = stride
        self.spatial: nn.Conv3d | None = None
        if rank is None:
            self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=stride)
        else:
            self.spatial = nn.Conv3d(
                in_channels, rank, kernel_size=(1, kh, kw), stride=(1, sh, sw), bias=False
            )
            nn.init.xavier_uniform_(self.spatial.weight.view(rank, -1))
            self.proj = nn.Conv3d(rank, dim, kernel_size=(kt, 1, 1), stride=(st, 1, 1))
        # Initialise like a linear layer over the flattened tubelet (as MAE does).
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    @property
    def frame_filters(self) -> Tensor:
        """The weights of the filters that see the frames, (..., k_h, k_w) per 2-D filter."""
        return (self.spatial if self.spatial is not None else self.proj).weight

    def grid(self, size: tuple[int, int, int]) -> tuple[int, int, int]:
        """(T_p, H_p, W_p) for an input of (T, H, W)."""
        return tubelet_grid(size, self.kernel, self.stride)[0]  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """(B, C, T, H, W) -> tokens (B, T_p, H_p*W_p, D) and the grid (T_p, H_p, W_p)."""
        size = (x.shape[2], x.shape[3], x.shape[4])
        grid, (front, top, bottom, left, right) = tubelet_grid(
            size,
            self.kernel,  # type: ignore[arg-type]
            self.stride,  # type: ignore[arg-type]
        )
        if front or top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom, front, 0))
        # The Conv3d weights, run as 2-D convolutions (several times faster on a CPU).
        if self.spatial is not None:
            x = conv3d(x, self.spatial.weight, None, self.spatial.stride)  # (B, r, T', ..)
        z = conv3d(x, self.proj.weight, self.proj.bias, self.proj.stride)  # (B, D, T_p, ..)
        return rearrange(z, "b d t h w -> b t (h w) d"), grid


class ConvStem(nn.Sequential):
    """Small causal convolutions at full resolution before the tokenizer: per entry of
    ``channels`` a :class:`CausalConv3d` (time padded on the left only, space "same"), a
    per-position norm over channels (``norm="channel"``; ``"none"``: a bias instead) and a
    GELU. (B, C, T, H, W) -> (B, channels[-1], T, H, W).
    """

    def __init__(
        self, in_channels: int, channels: tuple[int, ...], kernel: Triple, norm: str = "channel"
    ) -> None:
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            if norm == "channel":
                layers += [CausalConv3d(prev, ch, kernel), ChannelNorm3d(ch), nn.GELU()]
            else:
                layers += [CausalConv3d(prev, ch, kernel, bias=True), nn.GELU()]
            prev = ch
        super().__init__(*layers)
