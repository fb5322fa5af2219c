"""Tiny configs and helpers shared by the model tests (CPU, D=32, 1+1 blocks).

A uniquely named module (not conftest) so `from model_helpers import ...` cannot clash with
another test folder's conftest."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vivit_hpo.config import ViViTConfig
from vivit_hpo.data.types import SessionMeta


def tiny_vivit(**overrides: Any) -> ViViTConfig:
    """D=32, 2 heads (head dim 16), 1 spatial + 1 temporal block, odd tubelets."""
    base: dict[str, Any] = dict(
        embed_dim=32,
        num_heads=2,
        num_spatial_blocks=1,
        num_temporal_blocks=1,
        kernel_size=(2, 3, 3),
        stride=(2, 2, 3),
        mlp_ratio=2.0,
        num_registers=2,
    )
    base.update(overrides)
    return ViViTConfig(**base)


def meta(
    name: str,
    units: int = 5,
    height: int = 13,
    width: int = 10,
    behavior: int = 0,
    channels: int = 1,
    behavior_names: tuple[str, ...] = (),
) -> SessionMeta:
    return SessionMeta(
        name=name,
        num_units=units,
        num_channels=channels,
        height=height,
        width=width,
        num_behavior=behavior,
        frame_rate=60.0,
        mean_rates=tuple(0.05 * (i + 1) for i in range(units)),
        behavior_names=behavior_names,
    )


def assert_causal(core: nn.Module, x: torch.Tensor, frame: int, ends: list[int]) -> None:
    """Changing ``frame`` of ``x`` (B, C, T, H, W) leaves every temporal token of the core's
    output (B, D, T_p, H', W') that ends before it unchanged, and changes those from it on.

    Args:
        ends: the last frame of each of the T_p temporal tokens.
    """
    x2 = x.clone()
    x2[:, :, frame] = torch.randn_like(x2[:, :, frame])
    with torch.no_grad():
        diff = (core(x2) - core(x)).abs().amax(dim=(0, 1, 3, 4))  # (T_p,)
    assert diff.shape[0] == len(ends)
    for j, end in enumerate(ends):
        if end < frame:
            assert diff[j] == 0, f"token {j} (frames up to {end}) saw frame {frame}"
        else:
            assert diff[j] > 0, f"token {j} (frames up to {end}) ignores frame {frame}"


def assert_all_grads(model: nn.Module, *, allow_zero: tuple[str, ...] = ()) -> None:
    """Every parameter has a finite gradient; those not named in ``allow_zero`` a nonzero one."""
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        if not any(name.startswith(prefix) for prefix in allow_zero):
            assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
