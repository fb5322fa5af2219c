from __future__ import annotations

import pytest
import torch
from model_helpers import assert_all_grads

from vivit_hpo.config import CNNConfig
from vivit_hpo.models.cnn import CNNCore, ResBlock3d

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
