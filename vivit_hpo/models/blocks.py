"""The ViViT's transformer blocks: parallel and sequential pre-norm blocks, with QK-norm and RoPE
applied before any attention backend."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from vivit_hpo.config import ViViTConfig
from vivit_hpo.models.attention import attention, attention_weights
from vivit_hpo.models.layers import (
    MLP,
    DropPath,
    apply_rope,
    make_norm,
    mlp_activate,
    mlp_hidden_dim,
    mlp_in_dim,
)

__all__ = ["AttnSink", "ParallelBlock", "Rope", "SequentialBlock", "make_block"]

Rope = tuple[Tensor, Tensor]  # (cos, sin), each broadcastable to (B, h, N, d/2)
AttnSink = list[tuple[Tensor, Tensor]]  # per block: (mean weights (h, N, N), entropy (h,))


def _entropy(weights: Tensor) -> Tensor:
    """(B, h, N, M) probabilities -> (h,) mean over sequences and queries of each row's entropy
    in nats (masked entries are exactly 0 and contribute 0)."""
    ent = -(weights * weights.clamp_min(1e-30).log()).sum(-1)  # (B, h, N)
    return ent.mean(dim=(0, 2))


class _AttentionMixin(nn.Module):
    num_heads: int
    causal: bool
    attn_drop: float
    q_norm: nn.Module
    k_norm: nn.Module

    def _qk_norms(self, norm: str, head_dim: int, enabled: bool) -> None:
        # One norm over each head's d channels, shared by the heads (as timm's qk_norm); applied
        # before RoPE and before any backend, so flash-attn, SDPA, math and the maps all see it.
        # It bounds each query's and key's logits, so it acts per token: RMS under `batch`.
        kind = "rms" if norm == "batch" else norm
        self.q_norm = make_norm(kind, head_dim) if enabled else nn.Identity()
        self.k_norm = make_norm(kind, head_dim) if enabled else nn.Identity()

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, rope: Rope | None, sink: AttnSink | None
    ) -> Tensor:
        """(B, h, N, d) each -> (B, h, N, d), QK-norm (when on) then RoPE applied to q and k."""
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if sink is not None:
            weights = attention_weights(q, k, causal=self.causal)  # (B, h, N, N)
            sink.append((weights.mean(0), _entropy(weights)))
            return torch.matmul(weights.to(v.dtype), v)
        p = self.attn_drop if self.training else 0.0
        return attention(q, k, v, causal=self.causal, dropout_p=p)


class ParallelBlock(_AttentionMixin):
    """Pre-norm block with attention and MLP side by side (one norm, one fused in-projection to
    q, k, v and the MLP input, one fused out-projection of [attention, MLP]), as the reference.

    ``x + drop_path(dropout(W_out [attn(q, k, v), act(m)]))`` with ``[q, k, v, m] = W_in norm(x)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        mlp: str,
        norm: str,
        dropout: float,
        drop_path: float,
        causal: bool,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.causal, self.attn_drop = dim, num_heads, causal, dropout
        self._qk_norms(norm, dim // num_heads, qk_norm)
        self.mlp_kind = mlp
        self.hidden = mlp_hidden_dim(dim, mlp_ratio, mlp)
        self.mlp_in = mlp_in_dim(self.hidden, mlp)
        self.norm = make_norm(norm, dim)
        self.in_proj = nn.Linear(dim, 3 * dim + self.mlp_in, bias=False)
        self.out_proj = nn.Linear(dim + self.hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, rope: Rope | None = None, sink: AttnSink | None = None) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        d = self.dim
        y = self.in_proj(self.norm(x))  # (B, N, 3D + M)
        q, k, v, m = y.split([d, d, d, self.mlp_in], dim=-1)
        q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=self.num_heads) for t in (q, k, v))
        a = rearrange(self._attend(q, k, v, rope, sink), "b h n e -> b n (h e)")  # (B, N, D)
        out = self.out_proj(torch.cat([a, mlp_activate(m, self.mlp_kind)], dim=-1))  # (B, N, D)
        return x + self.drop_path(self.drop(out))


class SequentialBlock(_AttentionMixin):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (each branch with
    dropout and drop-path)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        mlp: str,
        norm: str,
        dropout: float,
        drop_path: float,
        causal: bool,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.causal, self.attn_drop = dim, num_heads, causal, dropout
        self._qk_norms(norm, dim // num_heads, qk_norm)
        self.norm1 = make_norm(norm, dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = make_norm(norm, dim)
        self.mlp = MLP(dim, mlp_ratio, mlp)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, rope: Rope | None = None, sink: AttnSink | None = None) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        qkv = rearrange(
            self.qkv(self.norm1(x)), "b n (three h e) -> three b h n e", three=3, h=self.num_heads
        )
        a = rearrange(self._attend(qkv[0], qkv[1], qkv[2], rope, sink), "b h n e -> b n (h e)")
        x = x + self.drop_path(self.drop(self.proj(a)))  # (B, N, D)
        return x + self.drop_path(self.drop(self.mlp(self.norm2(x))))


def make_block(cfg: ViViTConfig, *, drop_path: float, causal: bool) -> nn.Module:
    """A parallel or sequential block as ``cfg.parallel`` says."""
    cls = ParallelBlock if cfg.parallel else SequentialBlock
    return cls(
        cfg.embed_dim,
        cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        mlp=cfg.mlp,
        norm=cfg.norm,
        dropout=cfg.dropout,
        drop_path=drop_path,
        causal=causal,
        qk_norm=cfg.qk_norm,
    )
