from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_all_grads

from vivit_hpo.config import CNNConfig
from vivit_hpo.models.cnn import CausalConv3d, CNNCore, ResBlock3d

CFG = CNNConfig(channels=(4, 8, 8), stem_kernel=(3, 5, 5), kernel_size=(2, 3, 3))


def test_shapes_for_odd_sizes() -> None:
    core = CNNCore(CFG, 2)
    out = core(torch.randn(2, 2, 7, 13, 10))
    # Time is kept; H and W are halved (rounding up) by each stage after the first.
    assert out.shape == (2, 8, 7, 4, 3)
    assert core.out_dim == 8 and torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient() -> None:
    core = CNNCore(CNNConfig(channels=(4, 6), blocks_per_stage=2, dropout=0.1), 1)
    core(torch.randn(2, 1, 6, 9, 9)).pow(2).mean().backward()
    assert_all_grads(core)
    assert sum(isinstance(m, ResBlock3d) for m in core.modules()) == 4


@pytest.mark.parametrize("frame", [1, 3, 5])
def test_causal_in_time(frame: int) -> None:
    core = CNNCore(CFG, 1).train()  # the norm is per position, so training mode is causal too
    x = torch.randn(2, 1, 7, 11, 11)
    x2 = x.clone()
    x2[:, :, frame] += torch.randn_like(x2[:, :, frame])
    diff = (core(x2) - core(x)).abs().amax(dim=(0, 1, 3, 4))  # (T,)
    assert (diff[:frame] == 0).all()
    assert diff[frame] > 0


@pytest.mark.parametrize(
    ("kernel", "stride", "pad_time", "frames"),
    [
        ((1, 3, 3), 1, True, 5),  # one frame long: frames along the batch
        ((1, 4, 4), 2, True, 3),  # even kernel, strided in space
        ((6, 5, 5), 1, False, 6),  # the whole window, lags as channels
        ((6, 4, 4), 2, False, 6),
        ((3, 3, 3), 1, False, 7),  # neither: the 3-D convolution itself
        ((3, 3, 3), 1, True, 4),
    ],
)
def test_the_2d_paths_compute_the_3d_convolution(
    kernel: tuple[int, int, int], stride: int, pad_time: bool, frames: int
) -> None:
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, kernel, stride, bias=True, pad_time=pad_time)
    x = torch.randn(2, 2, frames, 9, 8, requires_grad=True)
    got = conv(x)
    want = conv.conv(F.pad(x, conv.pad))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    (g,) = torch.autograd.grad(got.square().sum(), conv.conv.weight)
    (h,) = torch.autograd.grad(want.square().sum(), conv.conv.weight)
    torch.testing.assert_close(g, h, atol=1e-4, rtol=1e-4)
