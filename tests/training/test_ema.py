from __future__ import annotations

import pytest
import torch
from torch import nn

from vivit_hpo.training.ema import EMA, ema_decay_at


def test_decay_ramps_up_to_its_value() -> None:
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.9, 10_000) == 0.9
    assert all(ema_decay_at(0.99, n) <= ema_decay_at(0.99, n + 1) for n in range(1, 1000))


def test_average_moves_towards_the_model_by_one_minus_decay() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.5)
    start = {n: t.clone() for n, t in ema.state_dict().items()}
    assert not any(p.requires_grad for p in ema.average.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(8, 3))  # moves the running statistics (and the batch counter)
    ema.update(model, updates=1000)  # past the ramp: decay 0.5
    now = model.state_dict()
    for name, avg in ema.state_dict().items():
        if avg.is_floating_point():
            torch.testing.assert_close(avg, 0.5 * start[name] + 0.5 * now[name])
        else:
            assert torch.equal(avg, now[name]), name  # integer buffers are copied
