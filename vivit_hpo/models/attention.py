"""Scaled dot-product attention with one place that decides the backend.

``attention_backend(q)`` picks, in order: flash-attn (``flash_attn_func``) when the package is
installed and ``q`` is a CUDA bf16/fp16 tensor with a head dim flash-attn supports; else PyTorch's
``scaled_dot_product_attention`` (which itself dispatches to cuDNN / memory-efficient / flash /
math kernels), except on a CPU for sequences of at most ``CPU_MATH_MAX_LEN`` tokens (the
temporal attention over a window's few tubelets), where PyTorch's CPU kernel costs more per
sequence than the work: 3x the plain math path's time for 1,568 sequences of 2 tokens. The
plain math path is the reference the fast paths are tested against, and the path used when
attention weights are asked for (``attention_weights``).

The environment variable ``VIVIT_HPO_ATTENTION`` (:data:`vivit_hpo.settings.ATTENTION`)
overrides the choice: ``auto`` (default), ``flash-attn``, ``sdpa`` or ``math``. An explicit
``flash-attn`` that cannot be honoured raises :class:`~vivit_hpo.errors.ConfigError`; it never
falls back silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vivit_hpo import settings
from vivit_hpo.errors import ConfigError

__all__ = [
    "ATTENTION_ENV",
    "CPU_MATH_MAX_LEN",
    "Backend",
    "attention",
    "attention_backend",
    "attention_weights",
    "flash_attn_available",
]

Backend = Literal["flash-attn", "sdpa", "math"]
ATTENTION_ENV = settings.ATTENTION.name
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256
# On a CPU, sequences this short run by the math path (fwd + bwd of 4 heads of 8 channels, one
# thread: 2 tokens x 1,568 sequences 18 ms by SDPA, 6 ms by math; 4 tokens even; 8 tokens SDPA
# 4x faster).
CPU_MATH_MAX_LEN = 3

_flash_attn_func: Callable[..., Any] | None = None
_flash_import_error: str | None = None
try:  # flash-attn is an optional extra (`pip install vivit-hpo[flash]`)
    import flash_attn

    _flash_attn_func = flash_attn.flash_attn_func
except (ImportError, OSError, AttributeError) as e:  # OSError: built for another CUDA/torch
    _flash_import_error = f"{type(e).__name__}: {e}"


def flash_attn_available() -> bool:
    """True when the ``flash_attn`` package imported cleanly."""
    return _flash_attn_func is not None


def _flash_refusal(q: Tensor | None) -> str | None:
    """Why flash-attn cannot run on ``q`` (None when it can)."""
    if _flash_attn_func is None:
        return f"flash_attn is not installed ({_flash_import_error})"
    if q is None:
        return None
    if not q.is_cuda:
        return f"flash-attn needs CUDA tensors, got device {q.device}"
    if q.dtype not in _FLASH_DTYPES:
        return f"flash-attn needs bf16/fp16 tensors, got {q.dtype} (enable bf16 autocast)"
    if q.shape[-1] > _FLASH_MAX_HEAD_DIM:
        return f"flash-attn supports head dims up to {_FLASH_MAX_HEAD_DIM}, got {q.shape[-1]}"
    return None


def attention_backend(q: Tensor | None = None) -> Backend:
    """The backend :func:`attention` uses for queries like ``q``.

    Args:
        q: queries (B, heads, N, d). None describes a CUDA bf16 input when CUDA is available
            and a CPU fp32 input otherwise (what a training step on this machine would get).

    Returns:
        "flash-attn", "sdpa" or "math".

    Raises:
        ConfigError: ``VIVIT_HPO_ATTENTION`` is not a valid choice, or asks for flash-attn where
            it cannot run (not installed, not CUDA, not bf16/fp16, head dim too large).
    """
    requested = settings.ATTENTION.get()
    if q is None and not torch.cuda.is_available():
        q = torch.empty(0, 0, 0, 1)  # stands for a CPU fp32 input
    if requested == "flash-attn":
        reason = _flash_refusal(q)
        if reason is not None:
            raise ConfigError(
                f"{ATTENTION_ENV}=flash-attn cannot be honoured: {reason}; "
                f"unset it or set {ATTENTION_ENV}=auto"
            )
        return "flash-attn"
    if requested == "sdpa":
        return "sdpa"
    if requested == "math":
        return "math"
    if _flash_refusal(q) is None:
        return "flash-attn"
    if q is not None and q.device.type == "cpu" and 0 < q.shape[-2] <= CPU_MATH_MAX_LEN:
        return "math"
    return "sdpa"


def attention_weights(q: Tensor, k: Tensor, *, causal: bool) -> Tensor:
    """Softmax attention probabilities by the plain math path.

    Args:
        q: (B, heads, N, d); k: (B, heads, M, d).
        causal: mask key j > query i (needs N == M).

    Returns:
        (B, heads, N, M) probabilities in float32 (rows sum to 1; masked entries exactly 0).
    """
    scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale  # (B, h, N, M)
    if causal:
        n, m = scores.shape[-2:]
        if n != m:
            raise ValueError(f"causal attention needs as many keys as queries, got {n} and {m}")
        future = torch.ones(n, m, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1)


def _math_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, dropout_p: float) -> Tensor:
    weights = attention_weights(q, k, causal=causal).to(v.dtype)  # (B, h, N, M)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return torch.matmul(weights, v)  # (B, h, N, d)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    dropout_p: float = 0.0,
    backend: Backend | None = None,
) -> Tensor:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d)) v``.

    Args:
        q, k, v: (B, heads, N, d) (k and v may have another length M when not causal).
        causal: query i attends to keys j <= i only.
        dropout_p: dropout on the attention probabilities; pass 0.0 when evaluating.
        backend: force a backend (tests); None asks :func:`attention_backend`.

    Returns:
        (B, heads, N, d), the dtype of ``v``.
    """
    chosen = backend or attention_backend(q)
    if chosen == "flash-attn":
        reason = _flash_refusal(q)
        if reason is not None:
            raise ConfigError(f"attention backend flash-attn cannot run: {reason}")
        assert _flash_attn_func is not None
        # flash-attn takes (B, N, heads, d); the transposes are views, not copies.
        out = _flash_attn_func(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=dropout_p,
            causal=causal,
        )  # (B, N, h, d)
        return out.transpose(1, 2)  # (B, h, N, d)
    if chosen == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    if chosen == "math":
        return _math_attention(q, k, v, causal, dropout_p)
    raise ValueError(f"unknown attention backend {chosen!r}; use one of flash-attn, sdpa, math")
