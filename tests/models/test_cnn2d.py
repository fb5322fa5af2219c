"""The yardstick cores: the lags-as-channels 2-D CNN and the LN model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_all_grads
from test_budget import _measured_forward_flops

from vivit_hpo.config import CNN2DConfig, LNConfig, ModelConfig, parse_run_config
from vivit_hpo.errors import ConfigError
from vivit_hpo.models import check_feasible, count_parameters, estimate_memory_bytes
from vivit_hpo.models.budget import flops_per_sample
from vivit_hpo.models.cnn2d import CNN2DCore, LNCore, laplace_l2

L = 5
CNN = CNN2DConfig(channels=(4, 6, 6), kernels=(5, 3, 3))
LN = LNConfig(filters=3, kernel=5)


def test_cnn2d_shapes_and_gradients() -> None:
    core = CNN2DCore(CNN, 2, L).train()
    out = core(torch.randn(3, 2, 9, 11, 8))
    assert out.shape == (3, 6, 9 - L + 1, 11, 8)  # every frame with L of history, full grid
    assert core.out_dim == 6 and core.output_grid(11, 8) == (11, 8)
    assert (core.time_kernel, core.time_stride) == (L, 1)
    (out.pow(2).mean() + core.regularizer()).backward()
    assert_all_grads(core)


def test_without_pad_input_the_first_layer_is_valid_and_the_rest_keep_its_map() -> None:
    """``pad_input: false`` (the Sensorium baseline's): the first layer's 5x5 kernel leaves
    (H - 4) x (W - 4) outputs, each the same sum as the padded core's at that pixel."""
    valid = CNN2DCore(CNN2DConfig(channels=(4,), kernels=(5,), pad_input=False), 2, L).eval()
    padded = CNN2DCore(CNN2DConfig(channels=(4,), kernels=(5,)), 2, L).eval()
    padded.load_state_dict(valid.state_dict())
    x = torch.randn(2, 2, 7, 11, 8)
    out = valid(x)
    assert out.shape == (2, 4, 7 - L + 1, 7, 4) and valid.output_grid(11, 8) == (7, 4)
    torch.testing.assert_close(out, padded(x)[..., 2:-2, 2:-2])
    deep = CNN2DCore(CNN2DConfig(channels=(4, 6), kernels=(5, 3), pad_input=False), 2, L)
    assert deep(x).shape == (2, 6, 7 - L + 1, 7, 4)


def test_the_first_layer_is_a_2d_conv_of_the_lags_as_channels() -> None:
    # At frame t, the first layer's output is Conv2d over frames t-L+1..t stacked as channels.
    core = CNN2DCore(CNN2DConfig(channels=(4,), kernels=(3,), batch_norm=False), 2, L).eval()
    x = torch.randn(2, 2, 8, 7, 7)
    w = core.first.weight  # (4, C, L, 3, 3)
    w2d = w.flatten(1, 2)  # (4, C*L, 3, 3): channel-major, then lag
    assert core.first.bias is not None
    out = core.layers[0](x)  # (B, 4, T - L + 1, H, W)
    assert out.shape[2] == 8 - L + 1
    for t in range(L - 1, 8):
        window = x[:, :, t - L + 1 : t + 1].flatten(1, 2)  # (B, C*L, H, W)
        expected = F.conv2d(window, w2d, core.first.bias, padding=1)
        torch.testing.assert_close(out[:, :, t - L + 1], expected, atol=1e-5, rtol=1e-5)


def test_ln_is_linear_in_the_stimulus() -> None:
    core = LNCore(LN, 1, L)
    x, y = torch.randn(2, 1, 7, 9, 9), torch.randn(2, 1, 7, 9, 9)
    torch.testing.assert_close(core(2 * x - 3 * y), 2 * core(x) - 3 * core(y), atol=1e-5, rtol=1e-4)
    assert core(x).shape == (2, 3, 7 - L + 1, 9, 9)
    assert count_parameters(core) == 3 * L * 5 * 5  # no bias: the readout has one


@pytest.mark.parametrize("core", [CNN2DCore(CNN, 1, L), LNCore(LN, 1, L)], ids=["cnn2d", "ln"])
def test_causal_in_time_within_the_lags(core: torch.nn.Module) -> None:
    core.eval()
    x = torch.randn(1, 1, 12, 9, 9)
    base = core(x)  # output j ends on frame j + L - 1
    ends = torch.arange(base.shape[2]) + L - 1
    for f in (2, 6, 9):
        x2 = x.clone()
        x2[:, :, f] += 1.0
        diff = (core(x2) - base).abs().amax(dim=(0, 1, 3, 4))  # (T - L + 1,)
        assert (diff[ends < f] == 0).all(), "an output saw a later frame"
        within = (ends >= f) & (ends < f + L)
        assert within.any() and (diff[within] > 0).all(), "an output missed a frame in its lags"
        assert (diff[ends >= f + L] == 0).all(), "an output saw a frame older than num_lags"


def test_laplace_penalty_prefers_smooth_filters_whatever_their_scale() -> None:
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    smooth = torch.exp(-((yy - 4) ** 2 + (xx - 4) ** 2) / 8.0)[None, None]
    rough = torch.randn(1, 1, 9, 9)
    assert laplace_l2(smooth) < laplace_l2(rough) / 10
    torch.testing.assert_close(laplace_l2(5 * rough), laplace_l2(rough))
    assert CNN2DCore(CNN2DConfig(laplace=0.0), 1, L).regularizer() == 0


@pytest.mark.parametrize(
    "cfg", [CNN, CNN.model_copy(update={"pad_input": False}), LN], ids=["cnn2d", "valid", "ln"]
)
def test_cost_figures(cfg: CNN2DConfig | LNConfig) -> None:
    shape = (2, L, 11, 8)  # (C, L, H, W)
    core = CNN2DCore(cfg, 2, L) if isinstance(cfg, CNN2DConfig) else LNCore(cfg, 2, L)
    assert flops_per_sample(cfg, shape) == 3 * _measured_forward_flops(core, shape)
    assert check_feasible(ModelConfig(core=cfg), shape) is None
    params = count_parameters(core)
    assert estimate_memory_bytes(cfg, shape, 4) > 16 * params


def test_configs_parse_and_refuse_mismatched_layers() -> None:
    cfg = parse_run_config({"model": {"core": {"kind": "cnn2d"}}})
    assert isinstance(cfg.model.core, CNN2DConfig) and cfg.model.core.kernels == (9, 7, 7)
    assert isinstance(parse_run_config({"model": {"core": {"kind": "ln"}}}).model.core, LNConfig)
    with pytest.raises(ConfigError, match=r"model.core: .*one entry per layer"):
        parse_run_config({"model": {"core": {"kind": "cnn2d", "channels": [8, 8], "kernels": [9]}}})
    with pytest.raises(ConfigError, match=r"'vivit', 'cnn', 'cnn2d' or 'ln'"):
        parse_run_config({"model": {"core": {"kind": "glm"}}})
