from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vivit_hpo.config import ReadoutConfig
from vivit_hpo.errors import ConfigError
from vivit_hpo.models.readout import (
    MU_INIT_RANGE,
    RATE_FLOOR,
    GaussianReadout,
    inverse_softplus,
    module_keys,
)

RATES = (0.02, 0.1, 0.5, 2.0)


def _readout(**cfg: object) -> GaussianReadout:
    return GaussianReadout(4, 8, ReadoutConfig(**cfg), RATES)  # type: ignore[arg-type]


def test_init() -> None:
    r = _readout(init_sigma=0.3)
    assert r.mu.shape == (4, 2) and (r.mu.abs() <= MU_INIT_RANGE).all()
    torch.testing.assert_close(r.sigma, torch.full((4, 2), 0.3))
    assert r.features.shape == (4, 8)
    torch.testing.assert_close(torch.nn.functional.softplus(r.bias), torch.tensor(RATES))
    assert (_readout(bias_init="zero").bias == 0).all()


@pytest.mark.parametrize("output", ["softplus", "exp", "elu1"])
def test_bias_init_gives_the_mean_rates(output: str) -> None:
    r = _readout(output=output).eval()
    with torch.no_grad():
        r.features.zero_()
    rates = r(torch.randn(3, 8, 2, 5, 6))
    assert rates.shape == (3, 2, 4)
    torch.testing.assert_close(rates, torch.tensor(RATES).expand(3, 2, 4), atol=1e-5, rtol=1e-5)


def test_bias_init_needs_one_rate_per_unit() -> None:
    with pytest.raises(ConfigError, match="needs 4 mean rates, got 2"):
        GaussianReadout(4, 8, ReadoutConfig(), (0.1, 0.2))
    with pytest.raises(ConfigError, match="got none"):
        GaussianReadout(4, 8, ReadoutConfig())


def test_inverse_softplus() -> None:
    y = torch.tensor([1e-4, 0.1, 1.0, 30.0])
    torch.testing.assert_close(torch.nn.functional.softplus(inverse_softplus(y)), y)


def test_eval_is_deterministic_train_samples() -> None:
    r = _readout()
    x = torch.randn(2, 8, 3, 5, 6)
    r.eval()
    torch.testing.assert_close(r(x), r(x))
    r.train()
    a, b = r(x), r(x)
    assert not torch.allclose(a, b)
    # The jitter is drawn per sample: two copies of one input are read at different places.
    same = r(x[:1].expand(2, -1, -1, -1, -1))
    assert not torch.allclose(same[0], same[1])
    # ... and shared by a sample's time steps: equal steps give equal rates.
    steps = r(x[:, :, :1].expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(steps[:, 0], steps[:, 2])
    assert torch.equal(r.positions(3, sample=False), r.mu.expand(3, -1, -1))
    assert r(x, sample=False).equal(r.eval()(x))


def test_reads_the_feature_at_mu() -> None:
    r = GaussianReadout(1, 1, ReadoutConfig(bias_init="zero")).eval()
    x = torch.zeros(1, 1, 2, 5, 5)
    x[0, 0, 1, 1, 3] = 4.0  # step 1, row 1, column 3
    with torch.no_grad():
        r.features.fill_(1.0)
        # Pixel centres at align_corners=False: column 3 -> x = 0.4, row 1 -> y = -0.4.
        r.mu.copy_(torch.tensor([[0.4, -0.4]]))
    want = torch.nn.functional.softplus(torch.tensor([[[0.0], [4.0]]])) + 1e-6
    torch.testing.assert_close(r(x), want)


def test_rates_positive_and_grads() -> None:
    r = _readout().train()
    x = torch.randn(2, 8, 2, 3, 4, requires_grad=True)
    with torch.no_grad():
        r.bias.fill_(-200.0)  # softplus underflows to 0: the floor keeps log(rate) finite
    rates = r(x)
    assert (rates > 0).all() and torch.isfinite(rates.log()).all()
    r.bias.data.fill_(0.0)
    r(x).sum().backward()
    for name, p in r.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_positions_that_drift_past_the_border_are_kept_in_range() -> None:
    # A unit pushed past the border must be projected back and still get a gradient: a clamp
    # in the forward pass alone would freeze it outside for good.
    cfg = ReadoutConfig(bias_init="zero", init_sigma=1e-3)
    r = GaussianReadout(1, 1, cfg, grid=(5, 5)).eval()
    x = torch.linspace(0, 1, 5).expand(1, 1, 1, 5, 5).clone()  # features grow to the right
    opt = torch.optim.SGD([r.mu], lr=0.2)
    with torch.no_grad():
        r.features.fill_(1.0)
        r.mu.copy_(torch.tensor([[1.7, 0.0]]))  # drifted right, past the border
    r.constrain_()
    assert 0.79 < float(r.mu.detach()[0, 0]) < 0.8  # just inside the centre of the last column of 5
    for _ in range(3):
        opt.zero_grad()
        r(x).sum().backward()  # a loss that wants the unit further left: lower rates
        assert r.mu.grad is not None and r.mu.grad[0, 0] != 0
        opt.step()
        r.constrain_()
        assert (r.mu.abs() < 0.8).all()
    # Rising rates to the right: a loss of +rates is lowered by moving left, back inside.
    assert float(r.mu.detach()[0, 0]) < 0.75


def test_regularizer() -> None:
    r = _readout(gamma_features=0.5)
    torch.testing.assert_close(r.regularizer(), 0.5 * r.features.abs().mean())
    assert _readout().regularizer().item() == 0.0


def test_module_keys() -> None:
    keys = module_keys(["m1.2024", "train", "ok_name", "m1_2024", "s_m1_2024", ""])
    assert keys["ok_name"] == "ok_name"
    assert keys["m1.2024"] == "s_m1_2024"
    assert keys["train"] == "s_train"
    assert keys["m1_2024"] == "m1_2024"
    assert keys["s_m1_2024"] == "s_m1_2024_1"  # the sanitised name took it first
    assert keys[""] == "s_"
    assert len(set(keys.values())) == len(keys)
    torch.nn.ModuleDict({k: torch.nn.Identity() for k in keys.values()})  # all are valid keys


def test_shift_moves_every_unit_like_moving_mu() -> None:
    r = _readout().eval()
    x = torch.randn(2, 8, 3, 5, 6)
    zero = torch.zeros(2, 3, 2)
    torch.testing.assert_close(r(x, shift=zero), r(x), atol=1e-6, rtol=1e-6)
    shift = torch.tensor([0.1, -0.2]).expand(2, 3, 2)
    moved = GaussianReadout(4, 8, ReadoutConfig(), RATES).eval()
    moved.load_state_dict(r.state_dict())
    with torch.no_grad():
        moved.mu.add_(torch.tensor([0.1, -0.2]))
    torch.testing.assert_close(r(x, shift=shift), moved(x), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(2, 3, 2\)"):
        r(x, shift=torch.zeros(2, 2))


def test_shift_is_per_sample_and_step_and_gets_a_gradient() -> None:
    r = _readout().train()
    x = torch.randn(1, 8, 1, 5, 6).expand(2, -1, 3, -1, -1)  # one frame, repeated
    shift = torch.zeros(2, 3, 2)
    shift[1, 2] = 0.3
    shift.requires_grad_(True)
    rates = r(x, sample=False, shift=shift)
    assert rates.shape == (2, 3, 4) and torch.isfinite(rates).all()
    torch.testing.assert_close(rates[0, 0], rates[1, 0])  # same input, same (no) shift
    assert not torch.allclose(rates[1, 2], rates[1, 1])  # only step 2 of sample 1 moved
    (rates.sum() + r(x, shift=shift).sum()).backward()  # the second one jittered
    assert shift.grad is not None and shift.grad.abs().sum() > 0
    for name, p in r.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dot_product_runs_in_fp32_under_bf16_autocast() -> None:
    # Wide enough that a bf16 dot product would round the drive well past fp32 tolerance.
    r = GaussianReadout(6, 64, ReadoutConfig(bias_init="zero")).eval()
    with torch.no_grad():
        r.features.normal_()
    x = torch.randn(2, 64, 3, 5, 6).to(torch.bfloat16)  # what a bf16 core hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = r(x)
    assert got.dtype == torch.float32
    # The same bf16-rounded features, read and weighted in fp32 by hand.
    grid = r.mu.detach()[None, None].expand(2, 1, -1, -1)  # (B, 1, N, 2)
    flat = x.float().reshape(2, 64 * 3, 5, 6)
    feats = F.grid_sample(flat, grid, padding_mode="border", align_corners=False)
    pre = torch.einsum("bdpn,nd->bpn", feats.view(2, 64, 3, 6), r.features.detach())
    want = F.softplus(pre + r.bias.detach()) + RATE_FLOOR
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
