"""Bits per spike against hand computations, and the streaming accumulator against the pure one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vivit_hpo.metrics import RATE_FLOOR, BPSAccumulator, bits_per_spike, mean_over_sessions

LN2 = math.log(2)

# Three units over four bins. Unit 0: λ chosen so LL = ln 2 − 4 and LL0 = −4 (ȳ = 1), so its
# bps is exactly ln 2 / (4 ln 2) = 0.25. Unit 1: its last bin is masked out; a constant λ = 1
# against ȳ = 5/3. Unit 2: no valid spike (its one spike is masked), so it is left out.
Y = np.array([[0, 3, 0], [1, 0, 0], [2, 2, 0], [1, 5, 1]], dtype=np.float64)
RATES = np.array([[0.5, 1, 0.2], [1, 1, 0.2], [2, 1, 0.2], [0.5, 100, 0.2]])
MASK = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=np.float64)

# By hand:
BPS0 = 0.25
GAIN1 = (3 * 0 + 0 + 2 * 0 - 3) - (5 * math.log(5 / 3) - 5)  # LL − LL0 of unit 1
BPS1 = GAIN1 / (LN2 * 5)  # = (2 − 2.5541281) / 3.4657359 = −0.15988758
SESSION = (BPS0 + BPS1) / 2
POOLED = (LN2 + GAIN1) / (LN2 * (4 + 5))


def test_hand_computation_pure() -> None:
    got = bits_per_spike(RATES, Y, MASK)
    assert got[0] == pytest.approx(0.25, abs=1e-12)
    assert got[1] == pytest.approx(BPS1, abs=1e-12)
    assert got[1] == pytest.approx(-0.15988758, abs=1e-8)
    assert math.isnan(got[2])


def test_hand_computation_accumulator() -> None:
    acc = BPSAccumulator(3)
    for rows in (slice(0, 1), slice(1, 3), slice(3, 4)):  # three batches, one pass
        acc.update(torch.tensor(RATES[rows]), torch.tensor(Y[rows]), torch.tensor(MASK[rows]))
    s = acc.result()
    np.testing.assert_allclose(s.bps_per_unit[:2], [BPS0, BPS1], atol=1e-12)
    assert math.isnan(s.bps_per_unit[2])
    assert s.bps == pytest.approx(SESSION, abs=1e-12)  # mean of included units, unclamped
    assert s.pooled_bps == pytest.approx(POOLED, abs=1e-12)
    assert s.num_excluded == 1
    assert s.num_spikes == 9
    assert s.num_bins.tolist() == [4, 3, 3]
    assert s.num_units == 3
    # Pearson r of rate vs count over each unit's valid bins.
    assert s.corr_per_unit[0] == pytest.approx(np.corrcoef(RATES[:, 0], Y[:, 0])[0, 1])
    assert math.isnan(s.corr_per_unit[1])  # a constant rate has no correlation
    assert s.corr == pytest.approx(s.corr_per_unit[0])


def test_the_null_is_the_evaluated_mean_not_the_training_mean() -> None:
    rng = np.random.default_rng(0)
    y = rng.poisson(0.7, (500, 4)).astype(float)
    evaluated_mean = np.broadcast_to(y.mean(0), y.shape)
    # Predicting the evaluated data's own mean scores exactly 0 ...
    np.testing.assert_allclose(bits_per_spike(evaluated_mean, y), 0.0, atol=1e-12)
    acc = BPSAccumulator(4)
    acc.update(torch.tensor(evaluated_mean), torch.tensor(y), torch.ones(500, 4))
    assert acc.result().bps == pytest.approx(0.0, abs=1e-12)
    # ... while any other constant (say a training mean of 0.5) scores below 0, as it would
    # not if the training mean were the null.
    assert (bits_per_spike(np.full(y.shape, 0.5), y) < 0).all()


def test_streaming_matches_pure_and_masks_ignore_garbage() -> None:
    rng = np.random.default_rng(1)
    t, n = 1000, 6
    rates = rng.gamma(2.0, 0.3, (t, n))
    y = rng.poisson(rates).astype(np.float32)
    mask = (rng.random((t, n)) > 0.2).astype(np.float32)
    y_garbage = np.where(mask > 0, y, np.nan)  # masked bins must not matter, even NaN
    acc = BPSAccumulator(n)
    for i in range(0, t, 128):
        acc.update(
            torch.tensor(rates[i : i + 128], dtype=torch.float32),
            torch.tensor(y_garbage[i : i + 128]),
            torch.tensor(mask[i : i + 128]),
        )
    s = acc.result()
    want = bits_per_spike(rates.astype(np.float32), y, mask)
    np.testing.assert_allclose(s.bps_per_unit, want, rtol=1e-6, atol=1e-9)
    m = mask > 0
    r = [np.corrcoef(rates[m[:, j], j], y[m[:, j], j])[0, 1] for j in range(n)]
    np.testing.assert_allclose(s.corr_per_unit, r, rtol=1e-5)
    # The truth beats a flat prediction.
    assert s.bps > 0


def test_zero_rate_is_clamped_inside_the_log_only() -> None:
    y = np.array([[1.0], [0.0]])
    got = bits_per_spike(np.array([[0.0], [0.0]]), y)
    expected = ((math.log(RATE_FLOOR) - 0) - (math.log(0.5) - 1)) / LN2
    assert np.isfinite(got[0]) and got[0] == pytest.approx(expected)
    # A zero rate where there is no spike costs nothing beyond −λ = 0.
    two = bits_per_spike(np.array([[1.0], [0.0]]), y)
    assert two[0] == pytest.approx((0 - 1 - (math.log(0.5) - 1)) / LN2)


def test_empty_and_bad_shapes() -> None:
    s = BPSAccumulator(2).result()
    assert s.num_excluded == 2 and math.isnan(s.bps) and math.isnan(s.pooled_bps)
    acc = BPSAccumulator(2)
    with pytest.raises(ValueError, match="same shape"):
        acc.update(torch.ones(3, 2), torch.ones(3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"expected \(B, 2\)"):
        acc.update(torch.ones(3, 3), torch.ones(3, 3), torch.ones(3, 3))


def test_mean_over_sessions_leaves_out_and_names_a_session_without_spikes() -> None:
    rng = np.random.default_rng(0)
    scores = {}
    for name, counts in (("a", rng.poisson(1.0, (50, 3))), ("quiet", np.zeros((50, 2)))):
        acc = BPSAccumulator(counts.shape[1])
        t = torch.from_numpy(counts.astype(np.float64))
        acc.update(torch.full_like(t, 0.8), t, torch.ones_like(t))
        scores[name] = acc.result()
    got = mean_over_sessions(scores)
    assert got.without_spikes == ("quiet",)
    assert got.per_session == {"a": scores["a"].bps}
    assert got.bps == scores["a"].bps and got.pooled_bps == pytest.approx(scores["a"].pooled_bps)
    none = mean_over_sessions({"quiet": scores["quiet"]})
    assert math.isnan(none.bps) and none.per_session == {} and none.without_spikes == ("quiet",)
