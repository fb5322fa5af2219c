from __future__ import annotations

import pytest
import torch
from model_helpers import tiny_vivit
from torch.utils.flop_counter import FlopCounterMode

from vivit_hpo.config import CNNConfig, ModelConfig
from vivit_hpo.models import (
    check_feasible,
    count_parameters,
    estimate_memory_bytes,
    flops_per_sample,
)
from vivit_hpo.models.cnn import CNNCore
from vivit_hpo.models.vivit import ViViTCore

SHAPE = (1, 7, 13, 10)


def _measured_forward_flops(core: torch.nn.Module, shape: tuple[int, ...]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        core(torch.randn(1, *shape))
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"parallel": False},
        {"mlp": "gelu", "num_registers": 0},
        {"stem_channels": (3, 4), "stem_kernel": (2, 3, 3)},  # full-resolution convs counted
        {"qk_norm": True, "token_norm": True, "parallel": False},  # norms: no matmul FLOPs
        {"tokenizer_rank": 2},  # spatial filters on every frame, then the temporal conv
    ],
)
def test_vivit_flops_match_a_flop_counter(monkeypatch: pytest.MonkeyPatch, overrides: dict) -> None:
    # The math path runs attention as matmuls, which the counter sees on CPU.
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
    cfg = tiny_vivit(**overrides)
    core = ViViTCore(cfg, 1).eval()
    assert flops_per_sample(cfg, SHAPE) == 3 * _measured_forward_flops(core, SHAPE)
    assert flops_per_sample(ModelConfig(core=cfg), SHAPE) == flops_per_sample(cfg, SHAPE)


def test_cnn_flops_match_a_flop_counter() -> None:
    cfg = CNNConfig(channels=(4, 8, 8), blocks_per_stage=2, kernel_size=(2, 3, 3))
    shape = (2, 6, 13, 10)
    assert flops_per_sample(cfg, shape) == 3 * _measured_forward_flops(CNNCore(cfg, 2), shape)


def test_flops_match_the_reference_formula() -> None:
    # The reference's flops_per_sample (GELU MLP x4, registers, no tokenizer) for its small model.
    d, ns, nt, t, s, reg = 192, 4, 4, 8, 256, 4

    def blk(n: int) -> int:
        return n * (2 * (3 * d + 4 * d) * d + 2 * (d + 4 * d) * d) + 4 * n * n * d

    reference = 3 * (t * ns * blk(s + reg) + s * nt * blk(t))
    cfg = tiny_vivit(
        embed_dim=d,
        num_heads=3,
        num_spatial_blocks=ns,
        num_temporal_blocks=nt,
        kernel_size=(4, 4, 4),
        stride=(4, 4, 4),
        mlp="gelu",
        mlp_ratio=4.0,
        num_registers=reg,
        pos_embed="learned",
    )
    tokenizer = 3 * 2 * 64 * d * t * s
    assert flops_per_sample(cfg, (1, 32, 64, 64)) == reference + tokenizer


def test_flops_grow_linearly_with_depth_and_shrink_with_patch_dropout() -> None:
    f1, f2, f3 = (flops_per_sample(tiny_vivit(num_spatial_blocks=n), SHAPE) for n in (1, 2, 3))
    assert f3 - f2 == pytest.approx(f2 - f1) and f2 > f1
    assert flops_per_sample(tiny_vivit(patch_dropout=0.5), SHAPE) < f1
    c1 = flops_per_sample(CNNConfig(channels=(4,)), SHAPE)
    assert flops_per_sample(CNNConfig(channels=(4,), blocks_per_stage=2), SHAPE) > c1


def test_memory_estimate() -> None:
    cfg = tiny_vivit(num_spatial_blocks=2, num_temporal_blocks=2)
    params = count_parameters(ViViTCore(cfg, 1))
    m1 = estimate_memory_bytes(cfg, SHAPE, 1)
    m8 = estimate_memory_bytes(cfg, SHAPE, 8)
    assert m1 > 16 * params
    assert m8 > m1
    # Activations scale with the batch, the optimiser state does not.
    assert (m8 - 16 * params) == pytest.approx(8 * (m1 - 16 * params), rel=1e-6)
    ckpt = tiny_vivit(num_spatial_blocks=2, num_temporal_blocks=2, grad_checkpointing=True)
    assert estimate_memory_bytes(ckpt, SHAPE, 8) < m8
    assert estimate_memory_bytes(cfg, SHAPE, 8, activation_bytes=4) > m8
    cnn = CNNConfig(channels=(4, 8))
    assert estimate_memory_bytes(cnn, SHAPE, 4) > 16 * count_parameters(CNNCore(cnn, 1))


def test_count_parameters() -> None:
    core = ViViTCore(tiny_vivit(), 1)
    total = count_parameters(core)
    assert total == sum(p.numel() for p in core.parameters())
    core.registers.requires_grad_(False)  # type: ignore[union-attr]
    assert count_parameters(core, trainable_only=True) == total - 2 * 32


def test_check_feasible_reasons() -> None:
    cfg = tiny_vivit(kernel_size=(4, 8, 8), stride=(4, 8, 8))
    assert check_feasible(cfg, (1, 8, 16, 16)) is None
    assert "smaller than the tubelet kernel 8x8" in (check_feasible(cfg, (1, 8, 16, 6)) or "")
    assert "shorter than the tubelet's temporal kernel 4" in (
        check_feasible(cfg, (1, 3, 16, 16)) or ""
    )
    assert "gives 1 temporal token" in (check_feasible(cfg, (1, 4, 16, 16)) or "")
    assert "empty axis" in (check_feasible(cfg, (0, 8, 16, 16)) or "")
    assert check_feasible(ModelConfig(core=cfg), (1, 5, 16, 16)) is None  # 5 frames: 2 tokens
    # Clips: the token count is of the clip's frames, the temporal kernel must fit in num_lags.
    quick = tiny_vivit(kernel_size=(8, 4, 4), stride=(8, 4, 4))  # the quick start's tubelet
    assert "gives 1 temporal token" in (check_feasible(quick, (1, 8, 24, 24)) or "")
    assert check_feasible(quick, (1, 64, 24, 24), num_lags=8) is None  # 8 tokens
    long_tubelet = tiny_vivit(kernel_size=(16, 4, 4), stride=(8, 4, 4))
    assert "num_lags=8 is shorter than the tubelet's temporal kernel 16" in (
        check_feasible(long_tubelet, (1, 64, 24, 24), num_lags=8) or ""
    )
    assert check_feasible(CNNConfig(), (1, 4, 5, 5)) is None
    assert "no stages" in (check_feasible(CNNConfig(channels=()), (1, 4, 5, 5)) or "")
    assert ">= 1" in (check_feasible(CNNConfig(channels=(4, 0)), (1, 4, 5, 5)) or "")
    assert ">= 1" in (check_feasible(CNNConfig(kernel_size=(0, 3, 3)), (1, 4, 5, 5)) or "")


def test_costs_of_the_inductive_biases() -> None:
    base = tiny_vivit()
    f0, m0 = flops_per_sample(base, SHAPE), estimate_memory_bytes(base, SHAPE, 4)
    stem = tiny_vivit(stem_channels=(4,), stem_kernel=(3, 3, 3))
    # One 3x3x3 conv 1 -> 4 at every (t, h, w) of the input; the tokenizer takes 4 channels.
    _, length, h, w = SHAPE
    tokens = 4 * 6 * 4  # (T_p, H_p, W_p) of SHAPE
    extra = 3 * (2 * 27 * 4 * length * h * w + 2 * (4 - 1) * 2 * 3 * 3 * 32 * tokens)
    assert flops_per_sample(stem, SHAPE) == f0 + extra
    params = count_parameters(ViViTCore(stem, 1)) - count_parameters(ViViTCore(base, 1))
    assert estimate_memory_bytes(stem, SHAPE, 4) > m0 + 16 * params
    for flag in ("qk_norm", "token_norm"):
        cfg = tiny_vivit(**{flag: True})
        assert flops_per_sample(cfg, SHAPE) == f0  # norms are left out of the FLOPs
        assert count_parameters(ViViTCore(cfg, 1)) > count_parameters(ViViTCore(base, 1))
        assert estimate_memory_bytes(cfg, SHAPE, 4) > m0
    tokens_on = ModelConfig(core=base, behavior_tokens=True)
    assert estimate_memory_bytes(tokens_on, SHAPE, 4) > estimate_memory_bytes(
        ModelConfig(core=base), SHAPE, 4
    )
    assert check_feasible(stem, SHAPE) is None
    assert check_feasible(ModelConfig(core=base, shifter=True), SHAPE) is None
