from __future__ import annotations

import pytest
import torch

from vivit_hpo.config import ModulatorConfig
from vivit_hpo.errors import DataError
from vivit_hpo.models.modulator import ConvGRUCell, ConvGRUModulator

CFG = ModulatorConfig(hidden_dim=4, kernel_size=3)


def _mod() -> ConvGRUModulator:
    return ConvGRUModulator(8, CFG, {"a": 3, "b.c": 2, "none": 0})


def test_starts_as_identity_and_learns_a_gain() -> None:
    mod = _mod()
    feats = torch.randn(2, 8, 4, 5, 6)
    beh = torch.randn(2, 4, 3)  # one row per temporal token
    out = mod(feats, beh, "a", first=1)
    assert out.shape == (2, 8, 3, 5, 6)
    torch.testing.assert_close(out, feats[:, :, 1:])
    out.pow(2).sum().backward()
    assert mod.gain.weight.grad is not None and mod.gain.weight.grad.abs().sum() > 0
    with torch.no_grad():
        mod.gain.weight.normal_()
    moved = mod(feats, beh, "a")
    assert moved.shape == feats.shape and not torch.allclose(moved, feats)
    # The gain depends on the behaviour, and on the position on the grid.
    assert not torch.allclose(moved, mod(feats, beh + 1.0, "a"))
    gain = moved / feats
    assert not torch.allclose(gain[..., 0, 0], gain[..., 2, 3])


def test_gain_at_a_step_depends_on_earlier_steps_only() -> None:
    mod = _mod()
    with torch.no_grad():
        mod.gain.weight.normal_()
    feats, beh = torch.randn(2, 8, 5, 5, 6), torch.randn(2, 5, 3)
    out = mod(feats, beh, "a")
    later_f, later_b = feats.clone(), beh.clone()
    later_f[:, :, 3:] += 1.0
    later_b[:, 3:] += 1.0
    changed = (mod(later_f, later_b, "a") - out).abs().amax(dim=(0, 1, 3, 4))  # (T',)
    assert (changed[:3] == 0).all() and (changed[3:] > 0).all()


def test_sessions_without_behaviour_pass_through() -> None:
    mod = _mod()
    with torch.no_grad():
        mod.gain.weight.normal_()
    feats = torch.randn(2, 8, 4, 5, 6)
    assert not mod.modulates("none") and mod.modulates("b.c")
    assert torch.equal(mod(feats, None, "none", first=3), feats[:, :, 3:])
    assert set(mod.behavior_proj.keys()) == {"a", "s_b_c"}
    assert mod(feats, torch.randn(2, 4, 2), "b.c").shape == (2, 8, 4, 5, 6)


def test_behaviour_shape_is_checked() -> None:
    mod = _mod()
    feats = torch.randn(2, 8, 4, 5, 6)
    with pytest.raises(DataError, match="session 'a' has 3 behaviour channels"):
        mod(feats, None, "a")
    with pytest.raises(DataError, match=r"got \(2, 4, 2\)"):
        mod(feats, torch.randn(2, 4, 2), "a")


def test_gru_cell_gates() -> None:
    cell = ConvGRUCell(3, 4, 2)  # an even kernel keeps the size too
    h = torch.zeros(1, 4, 5, 5)
    h1 = cell(torch.randn(1, 3, 5, 5), h)
    assert h1.shape == h.shape and (h1.abs() < 1).all()  # a convex mix of 0 and tanh


@pytest.mark.parametrize("max_gain", [1.0, 0.25])
def test_gain_stays_within_its_bound(max_gain: float) -> None:
    mod = ConvGRUModulator(8, ModulatorConfig(hidden_dim=4, max_gain=max_gain), {"a": 3})
    with torch.no_grad():
        mod.gain.weight.normal_(std=1e3)  # a gain layer driven far into saturation
    feats = torch.randn(2, 8, 4, 5, 6)
    gain = mod(feats, 10 * torch.randn(2, 4, 3), "a") / feats
    assert gain.min() >= 1 - max_gain - 1e-5 and gain.max() <= 1 + max_gain + 1e-5
    assert gain.min() < 1 - max_gain / 2 and gain.max() > 1 + max_gain / 2  # it does saturate
