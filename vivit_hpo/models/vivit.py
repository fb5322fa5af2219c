"""The factorised ViViT core: tubelet tokens, spatial blocks, then causal temporal blocks.

Data flow (B batch, C channels, T frames, D width, R registers)::

    x (B, C, T, H, W)
      -> [conv stem]                 (B, C_s, T, H, W) causal conv + channel norm + GELU each
      -> TubeletTokenizer            (B, T_p, S, D)    S = H_p * W_p
      -> [token norm]                (B, T_p, S, D)
      -> [+ absolute pos embed]      (B, T_p, S, D)
      -> [+ context]                 (B, T_p, S, D)    one (D,) vector per temporal token (the
                                                       behaviour embedding) on every position
      -> [patch dropout, training]   (B, T_p, S_k, D)  the same kept positions at every time step
      -> spatial blocks              (B*T_p, R + S_k, D)  registers first, 2D RoPE on patches only
                                                          (QK-norm, when on, before RoPE)
      -> drop registers              (B*T_p, S_k, D)
      -> temporal blocks             (B*S_k, T_p, D)   causal mask when cfg.causal, 1D RoPE
      -> final norm, back to a grid  (B, D, T_p, H_p, W_p)  a dropped position takes the
                                                          features of its nearest kept one

Attention maps for analysis: ``core(x, return_attention=True)`` returns ``(features,
AttentionMaps)``; the maps are computed with the math path (exact probabilities), averaged over
the batch. ``encoder.collect_attention(model, stim)`` does this in eval mode; asking for maps in
training mode with patch dropout on raises (the maps would index only the kept tokens).

Patch dropout and the readout: a dropped position has no token, and a readout that read zeros
there in training but real features in evaluation would train on features about ``1 - p`` the
size of the ones it is scored on. So every dropped position takes the output of its nearest kept
position (the same at every time step): training and evaluation see real token features at
every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from vivit_hpo.config import ViViTConfig
from vivit_hpo.models.blocks import AttnSink, ParallelBlock, Rope, SequentialBlock, make_block
from vivit_hpo.models.cnn import CausalConv3d
from vivit_hpo.models.layers import (
    AbsolutePosEmbed,
    BatchNormLast,
    laplace_l2,
    make_norm,
    rope_angles_1d,
    rope_angles_2d,
)
from vivit_hpo.models.tokenizer import ConvStem, TubeletTokenizer, temporal_tokens, tubelet_grid

__all__ = [
    "AttentionMaps",
    "ConvStem",
    "ParallelBlock",
    "SequentialBlock",
    "TubeletTokenizer",
    "ViViTCore",
    "check_grid",
    "make_block",
    "num_kept_tokens",
    "temporal_tokens",
    "tubelet_grid",
]


def num_kept_tokens(num_tokens: int, patch_dropout: float) -> int:
    """``ceil((1 - p) * S)`` spatial tokens survive patch dropout (at least one)."""
    # round() first: (1 - 0.1) * 10 is 9.000000000000002 in floating point, not 9.
    return max(1, math.ceil(round((1.0 - patch_dropout) * num_tokens, 6)))


# --- attention maps ------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionMaps:
    """Per-layer attention of a ViViT core, averaged over a batch (for analysis and reports).

    Attributes:
        spatial: one (heads, R + S, R + S) map per spatial block, the mean over all B * T_p
            spatial sequences; query/key index 0..R-1 are the registers, then the patches in
            row-major (H_p, W_p) order.
        temporal: one (heads, T_p, T_p) map per temporal block, the mean over all B * S
            sequences (lower triangular when causal).
        spatial_entropy: (L_s, heads) entropy in nats of each query's attention distribution,
            averaged over sequences and queries (computed per sequence, before averaging).
        temporal_entropy: (L_t, heads) likewise.
        num_registers: R.
        grid: (T_p, H_p, W_p) token grid.
    """

    spatial: list[Tensor]
    temporal: list[Tensor]
    spatial_entropy: Tensor
    temporal_entropy: Tensor
    num_registers: int
    grid: tuple[int, int, int]

    def register_mass(self) -> Tensor:
        """(L_s, heads): attention mass that patch queries put on the register keys, averaged
        over patch queries (0 everywhere when there are no registers)."""
        r = self.num_registers
        return torch.stack([m[:, r:, :r].sum(-1).mean(-1) for m in self.spatial])


# --- the core ------------------------------------------------------------------------------


class ViViTCore(nn.Module):
    """Factorised ViViT core (see the module docstring for the data flow).

    Args:
        cfg: the ViViT config.
        in_channels: C of the stimulus.
        max_input: (T, H, W) of the largest input it will see; needed for ``pos_embed="learned"``
            (the learned tables are allocated for its token grid), ignored otherwise.

    Attributes:
        out_dim: D, the channel count of the output.
    """

    def __init__(
        self, cfg: ViViTConfig, in_channels: int, max_input: tuple[int, int, int] | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.embed_dim
        self.time_kernel, self.time_stride = cfg.kernel_size[0], cfg.stride[0]
        self.head_dim = cfg.embed_dim // cfg.num_heads
        self.num_registers = cfg.num_registers
        self.grad_checkpointing = cfg.grad_checkpointing
        self.stem: ConvStem | None = None
        if cfg.stem_channels:
            self.stem = ConvStem(in_channels, cfg.stem_channels, cfg.stem_kernel, cfg.stem_norm)
        tok_in = cfg.stem_channels[-1] if cfg.stem_channels else in_channels
        self.tokenizer = TubeletTokenizer(
            tok_in, cfg.embed_dim, cfg.kernel_size, cfg.stride, cfg.tokenizer_rank
        )
        self.token_norm = make_norm(cfg.norm, cfg.embed_dim) if cfg.token_norm else None
        self.pos_embed: AbsolutePosEmbed | None = None
        if cfg.pos_embed != "rope":
            grid = self.tokenizer.grid(max_input) if max_input is not None else None
            self.pos_embed = AbsolutePosEmbed(cfg.pos_embed, cfg.embed_dim, grid)
        self.registers: nn.Parameter | None = None
        if cfg.num_registers:
            self.registers = nn.Parameter(torch.empty(1, cfg.num_registers, cfg.embed_dim))
            # Random, not zero: identical registers would get identical gradients forever.
            nn.init.trunc_normal_(self.registers, std=0.02)
        depth = cfg.num_spatial_blocks + cfg.num_temporal_blocks
        # Stochastic depth grows linearly over the whole stack, spatial blocks first.
        rates = [cfg.drop_path * i / max(depth - 1, 1) for i in range(depth)]
        ns = cfg.num_spatial_blocks
        self.spatial = nn.ModuleList(
            make_block(cfg, drop_path=rates[i], causal=False) for i in range(ns)
        )
        self.temporal = nn.ModuleList(
            make_block(cfg, drop_path=rates[ns + i], causal=cfg.causal)
            for i in range(cfg.num_temporal_blocks)
        )
        self.norm: nn.Module = nn.Identity()
        if cfg.final_norm == "token":
            self.norm = make_norm(cfg.norm, cfg.embed_dim)
        elif cfg.final_norm == "batch":
            self.norm = BatchNormLast(cfg.embed_dim)
        self.apply(_init_linear)

    def _spatial_rope(
        self, h: int, w: int, keep: Tensor | None, t: int, device: torch.device
    ) -> Rope:
        """(cos, sin) for the spatial sequences: (R + S, d/2), or (B*T, 1, R + S_k, d/2) when
        ``keep`` (B, S_k) holds each sample's kept positions."""
        ang = rope_angles_2d(h, w, self.head_dim, device)  # (S, d/2)
        r = self.num_registers
        if keep is None:
            ang = F.pad(ang, (0, 0, r, 0))  # (R + S, d/2): zero angle = registers unrotated
            return ang.cos(), ang.sin()
        ang = F.pad(ang[keep], (0, 0, r, 0))  # (B, R + S_k, d/2), per-sample kept positions
        cos, sin = (
            f[:, None, None].expand(-1, t, 1, -1, -1).flatten(0, 1)  # (B*T, 1, R + S_k, d/2)
            for f in (ang.cos(), ang.sin())
        )
        return cos, sin

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """(H_p, W_p) of the feature map for frames of ``height`` x ``width``."""
        _, hp, wp = self.tokenizer.grid((self.time_kernel, height, width))
        return hp, wp

    def regularizer(self) -> Tensor:
        """``laplace`` x the normalised Laplace penalty of the first layer that sees the frames
        (the stem's first conv, else the tokenizer), per frame and channel."""
        first = self.tokenizer.frame_filters
        if self.stem is not None:
            conv = self.stem[0]
            assert isinstance(conv, CausalConv3d)
            first = conv.conv.weight
        if self.cfg.laplace == 0:
            return first.new_zeros(())
        return self.cfg.laplace * laplace_l2(first)

    def _run(self, block: nn.Module, x: Tensor, rope: Rope | None, sink: AttnSink | None) -> Tensor:
        if self.grad_checkpointing and sink is None and torch.is_grad_enabled():
            out: Tensor = checkpoint(block, x, rope, use_reentrant=False)
            return out
        return block(x, rope, sink)

    @overload
    def forward(
        self,
        x: Tensor,
        return_attention: Literal[False] = ...,
        context: Tensor | None = ...,
    ) -> Tensor: ...

    @overload
    def forward(
        self, x: Tensor, return_attention: Literal[True], context: Tensor | None = ...
    ) -> tuple[Tensor, AttentionMaps]: ...

    def forward(
        self, x: Tensor, return_attention: bool = False, context: Tensor | None = None
    ) -> Tensor | tuple[Tensor, AttentionMaps]:
        """(B, C, T, H, W) -> features (B, D, T_p, H_p, W_p).

        Args:
            x: the frames.
            return_attention: also return the :class:`AttentionMaps` (math path, no gradient
                checkpointing; slower, for analysis).
            context: (B, T_p, D) added to every spatial token (not the registers) of each
                temporal step before the spatial blocks (the behaviour embedding); None: nothing.
        """
        drop_patches = self.training and self.cfg.patch_dropout > 0
        if return_attention and drop_patches:
            raise ValueError(
                "attention maps with patch dropout would index only the kept tokens; "
                "call core.eval() first (collect_attention does)"
            )
        if self.stem is not None:
            x = self.stem(x)  # (B, C_s, T, H, W)
        tokens, grid = self.tokenizer(x)  # (B, T, S, D)
        t, h, w = grid
        b, s, d = tokens.shape[0], h * w, self.out_dim
        if self.token_norm is not None:
            tokens = self.token_norm(tokens)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed(grid, x.device).to(tokens.dtype)  # (B, T, S, D)
        if context is not None:
            if context.shape != (b, t, d):
                raise ValueError(
                    f"context of shape {tuple(context.shape)}: expected (B, T_p, D) = {(b, t, d)}"
                )
            tokens = tokens + context[:, :, None, :].to(tokens.dtype)  # (B, T, S, D)

        keep: Tensor | None = None
        if drop_patches:
            n_keep = num_kept_tokens(s, self.cfg.patch_dropout)
            keep = torch.rand(b, s, device=x.device).argsort(dim=-1)[:, :n_keep]  # (B, S_k)
            tokens = tokens.gather(2, keep[:, None, :, None].expand(b, t, n_keep, d))

        sink_s: AttnSink | None = [] if return_attention else None
        sink_t: AttnSink | None = [] if return_attention else None
        z = rearrange(tokens, "b t s d -> (b t) s d")  # (B*T, S_k, D)
        if self.registers is not None:
            regs = self.registers.to(z.dtype).expand(b * t, -1, -1)  # (B*T, R, D)
            z = torch.cat([regs, z], dim=1)  # (B*T, R + S_k, D)
        rope_s = (
            self._spatial_rope(h, w, keep, t, x.device) if self.cfg.pos_embed == "rope" else None
        )
        for block in self.spatial:
            z = self._run(block, z, rope_s, sink_s)
        z = z[:, self.num_registers :]  # (B*T, S_k, D)

        z = rearrange(z, "(b t) s d -> (b s) t d", b=b)  # (B*S_k, T, D)
        rope_t = None
        if self.cfg.pos_embed == "rope":
            ang = rope_angles_1d(t, self.head_dim, x.device)  # (T, d/2)
            rope_t = (ang.cos(), ang.sin())
        for block in self.temporal:
            z = self._run(block, z, rope_t, sink_t)
        z = self.norm(z)

        out = rearrange(z, "(b s) t d -> b d t s", b=b)  # (B, D, T, S_k)
        if keep is not None:
            src = _nearest_kept(keep, h, w)  # (B, S): index into the kept tokens
            out = out.gather(3, src[:, None, None, :].expand(b, d, t, s))  # (B, D, T, S)
        features = out.reshape(b, d, t, h, w)  # (B, D, T_p, H_p, W_p)
        if not return_attention:
            return features
        assert sink_s is not None and sink_t is not None
        maps = AttentionMaps(
            spatial=[m for m, _ in sink_s],
            temporal=[m for m, _ in sink_t],
            spatial_entropy=torch.stack([e for _, e in sink_s]),
            temporal_entropy=torch.stack([e for _, e in sink_t]),
            num_registers=self.num_registers,
            grid=grid,
        )
        return features, maps


def _nearest_kept(keep: Tensor, h: int, w: int) -> Tensor:
    """(B, S) for each grid position, the index into ``keep`` (B, S_k) of the nearest kept
    position (itself when kept; ties go to the first kept in ``keep`` order)."""
    rows = torch.arange(h, device=keep.device).repeat_interleave(w)
    cols = torch.arange(w, device=keep.device).repeat(h)
    pos = torch.stack([rows, cols], dim=-1)  # (S, 2)
    kept = pos[keep]  # (B, S_k, 2)
    dist = (pos[None, :, None, :] - kept[:, None, :, :]).square().sum(-1)  # (B, S, S_k)
    return dist.argmin(dim=-1)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_grid(
    cfg: ViViTConfig, size: tuple[int, int, int], num_lags: int | None = None
) -> str | None:
    """Why a (F, H, W) input cannot go through a ViViT core of ``cfg`` (None when it can).

    ``F`` is the frames of one sample: ``num_lags`` for one target per window, a clip's frames
    in clip mode (``num_lags`` given, fewer than F). Temporal attention needs at least 2
    temporal tokens over those F frames; the tubelet's temporal kernel must fit in ``num_lags``
    (default F) all the same, so that the first read-out token, which ends on clip frame
    ``num_lags - 1``, is made of real frames only.
    """
    t, h, w = size
    lags = t if num_lags is None else num_lags
    kt, kh, kw = cfg.kernel_size
    if h < kh or w < kw:
        return (
            f"frames of {h}x{w} are smaller than the tubelet kernel {kh}x{kw}; "
            "use a smaller kernel_size"
        )
    if lags < kt:
        return (
            f"num_lags={lags} is shorter than the tubelet's temporal kernel {kt}; "
            "use a smaller kernel_size[0] or more lags"
        )
    tp = tubelet_grid(size, cfg.kernel_size, cfg.stride)[0][0]
    if tp < 2:
        # (only a window can get here: a clip has F > num_lags >= kt frames, so 2+ tokens)
        return (
            f"num_lags={t} with temporal kernel {kt} and stride {cfg.stride[0]} gives {tp} "
            "temporal token; temporal attention needs at least 2: lower stride[0], add lags, or "
            "train on clips (data.clip_frames: 2 or more tubelets' worth of frames)"
        )
    if cfg.pos_embed == "rope" and (cfg.embed_dim // cfg.num_heads) % 4:
        return f"head dim {cfg.embed_dim // cfg.num_heads} must be a multiple of 4 for 2D RoPE"
    return None
