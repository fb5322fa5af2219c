from __future__ import annotations

import pytest
import torch
from torch import nn

from vivit_hpo.errors import ConfigError
from vivit_hpo.models.layers import (
    MLP,
    AbsolutePosEmbed,
    DropPath,
    apply_rope,
    conv3d,
    make_norm,
    mlp_hidden_dim,
    rope_angles_1d,
    rope_angles_2d,
    sincos_1d,
    sincos_2d,
)


def test_make_norm() -> None:
    assert isinstance(make_norm("rms", 8), nn.RMSNorm)
    assert isinstance(make_norm("layer", 8), nn.LayerNorm)
    x = torch.randn(3, 8) * 5 + 2
    torch.testing.assert_close(
        make_norm("rms", 8)(x).pow(2).mean(-1), torch.ones(3), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(make_norm("layer", 8)(x).mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(make_norm("batch", 8)(x).mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="norm='group'"):
        make_norm("group", 8)


def test_mlp_hidden_dims() -> None:
    assert mlp_hidden_dim(32, 4.0, "gelu") == 128
    # SwiGLU: 2/3 of 128 = 85.3 -> 88, a multiple of 8.
    assert mlp_hidden_dim(32, 4.0, "swiglu") == 88
    assert mlp_hidden_dim(384, 4.0, "swiglu") == 1024
    with pytest.raises(ConfigError):
        mlp_hidden_dim(32, 4.0, "relu")


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_mlp_shapes_and_param_budget(kind: str) -> None:
    mlp = MLP(32, 4.0, kind)
    assert mlp(torch.randn(2, 5, 32)).shape == (2, 5, 32)
    n = sum(p.numel() for p in mlp.parameters())
    # Both kinds hold about 2 * 4 * D^2 weights (SwiGLU's 2/3 rule).
    assert abs(n - 2 * 4 * 32 * 32) / (2 * 4 * 32 * 32) < 0.05


def test_swiglu_is_gated() -> None:
    mlp = MLP(8, 2.0, "swiglu")
    x = torch.randn(4, 8)
    hidden = mlp.hidden
    w = mlp.fc_in.weight
    gate, value = x @ w[:hidden].T, x @ w[hidden:].T
    expected = (torch.nn.functional.silu(gate) * value) @ mlp.fc_out.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_drop_path() -> None:
    dp = DropPath(0.5)
    x = torch.ones(1000, 3, 4)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    y = dp(x)
    per_sample = y.flatten(1)
    # Whole samples are dropped or scaled by 1 / (1 - p).
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    assert torch.equal(DropPath(0.0).train()(x), x)


def _rotate(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    return apply_rope(x, ang.cos(), ang.sin())


def test_rope_1d_is_relative_and_norm_preserving() -> None:
    d = 16
    ang = rope_angles_1d(12, d)
    assert ang.shape == (12, 8)
    q, k = torch.randn(d), torch.randn(d)
    qs, ks = _rotate(q.expand(12, d), ang), _rotate(k.expand(12, d), ang)
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(12))
    # <R_i q, R_j k> depends on i - j only.
    torch.testing.assert_close(qs[5] @ ks[2], qs[9] @ ks[6])
    assert not torch.allclose(qs[5] @ ks[2], qs[5] @ ks[3])
    torch.testing.assert_close(_rotate(q[None], torch.zeros(1, 8))[0], q)  # angle 0: identity


def test_rope_2d_axial_halves() -> None:
    h, w, d = 3, 4, 16
    ang = rope_angles_2d(h, w, d).view(h, w, d // 2)
    rows, cols = ang[..., : d // 4], ang[..., d // 4 :]
    # Row channels depend only on the row, column channels only on the column.
    assert (rows == rows[:, :1]).all() and not (rows == rows[:1]).all()
    assert (cols == cols[:1]).all() and not (cols == cols[:, :1]).all()
    q, k = torch.randn(d), torch.randn(d)
    angles = rope_angles_2d(h, w, d)
    qs, ks = _rotate(q.expand(h * w, d), angles), _rotate(k.expand(h * w, d), angles)

    def at(r: int, c: int) -> int:
        return r * w + c

    # Relative in 2D: shifting both tokens by (1, 1) keeps the score.
    torch.testing.assert_close(qs[at(0, 0)] @ ks[at(1, 2)], qs[at(1, 1)] @ ks[at(2, 3)])
    with pytest.raises(ConfigError, match="multiple of 4"):
        rope_angles_2d(2, 2, 6)


def test_apply_rope_keeps_dtype() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    ang = rope_angles_1d(3, 8)
    assert apply_rope(x, ang.cos(), ang.sin()).dtype == torch.bfloat16


def test_sincos() -> None:
    e = sincos_1d(torch.arange(5), 7)
    assert e.shape == (5, 7) and (e[:, -1] == 0).all()
    torch.testing.assert_close(e[0, :3], torch.zeros(3))  # sin(0)
    g = sincos_2d(3, 4, 10).view(3, 4, 10)
    assert (g[..., :5] == g[:, :1, :5]).all()  # row half constant along a row
    assert (g[..., 5:] == g[:1, :, 5:]).all()  # column half constant along a column


def test_absolute_pos_embed_sinusoidal_any_grid() -> None:
    pe = AbsolutePosEmbed("sinusoidal", 12)
    assert pe((3, 2, 5), torch.device("cpu")).shape == (3, 10, 12)
    assert not list(pe.parameters())


def test_learned_pos_embed_resamples_space_and_aligns_time_to_the_end() -> None:
    pe = AbsolutePosEmbed("learned", 8, max_grid=(4, 6, 5))
    full = pe((4, 6, 5), torch.device("cpu"))
    assert full.shape == (4, 30, 8)
    short = pe((2, 6, 5), torch.device("cpu"))
    torch.testing.assert_close(short, full[2:])  # the newest tokens keep their embedding
    small = pe((4, 3, 2), torch.device("cpu"))
    assert small.shape == (4, 6, 8)
    small.sum().backward()
    assert pe.spatial is not None and pe.spatial.grad is not None
    with pytest.raises(ConfigError, match="larger num_lags"):
        pe((5, 6, 5), torch.device("cpu"))
    with pytest.raises(ConfigError, match="largest token grid"):
        AbsolutePosEmbed("learned", 8)


def test_rms_norm_keeps_bf16_and_matches_torch() -> None:
    norm = make_norm("rms", 16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16)
    ref = nn.RMSNorm(16, eps=1e-6)
    ref.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), ref(x))
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref(x), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "frames"),
    [
        (1, (4, 12, 12), (4, 2, 2), 8),  # the quick start's tubelets: steps side by side
        (2, (4, 5, 5), (2, 3, 3), 9),  # overlapping steps, a frame left over
        (3, (1, 3, 3), (1, 1, 1), 5),  # one-frame kernels
        (16, (16, 9, 9), (1, 1, 1), 16),  # the whole window (the CNN yardstick's first layer)
    ],
)
def test_conv3d_on_a_cpu_is_the_3d_convolution(
    channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int], frames: int
) -> None:
    """The 2-D form gives F.conv3d's output and gradients for every step and stacking order."""
    torch.manual_seed(0)
    x = torch.randn(2, channels, frames, 14, 13, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, channels, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    want = torch.nn.functional.conv3d(x, w, b, stride)
    got = conv3d(x, w, b, stride)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads = torch.autograd.grad(want, (x, w, b), g)
    torch.testing.assert_close(torch.autograd.grad(got, (x, w, b), g), grads)
