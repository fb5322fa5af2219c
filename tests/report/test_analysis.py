"""Figure data of a trained model: readout positions in pixels and attention statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vivit_hpo.report.analysis import (
    attention_info,
    default_queries,
    entropy_bits,
    frame_transform,
    receptive_field_info,
    tubelet_transform,
)
from vivit_hpo.report.checkpoint import analyze_run, read_truth


def test_frame_transform_maps_the_corners_to_the_frame_edges() -> None:
    info = receptive_field_info(
        {"s": np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.5]])},
        {"s": np.array([0.5, 0.5, 0.1])},
        {"s": (20, 40)},
    )
    (s,) = info.sessions
    assert s.x == (0.0, 40.0, 20.0) and s.y == (0.0, 20.0, 15.0)
    assert s.sigma_x == (10.0, 10.0, 2.0) and s.sigma_y == (5.0, 5.0, 1.0)
    assert s.true_x == () and s.median_error_px is None


def test_tubelet_transform_equals_the_frame_when_tubelets_tile_it() -> None:
    assert tubelet_transform(36, 36, (4, 4), (4, 4)) == pytest.approx(frame_transform(36, 36))


def test_tubelet_transform_follows_the_centred_padding() -> None:
    # W=10, k=s=4: 3 tokens over 12 padded pixels, 1 pixel of padding on each side; the
    # grid spans -1 .. 11 in frame pixels, so mu=-1 is x=-1 and mu=1 is x=11.
    ox, sx, oy, sy = tubelet_transform(8, 10, (4, 4), (4, 4))
    assert (ox - sx, ox + sx) == pytest.approx((-1.0, 11.0))
    assert (oy - sy, oy + sy) == pytest.approx((0.0, 8.0))
    # Overlapping tubelets (k=4, s=2) on W=8: 3 tokens centred at pixels 2, 4, 6; cell edges
    # one stride either side of the end centres.
    ox, sx, _, _ = tubelet_transform(8, 8, (4, 4), (2, 2))
    assert (ox - sx, ox + sx) == pytest.approx((1.0, 7.0))


def test_truth_gives_the_median_centre_error() -> None:
    mu = np.array([[0.0, 0.0], [0.5, 0.0], [-0.5, -0.5]])
    true = np.array([[0.1, 0.0], [0.5, 0.0], [-0.5, -0.5]])
    info = receptive_field_info(
        {"s": mu}, {"s": np.full((3, 2), 0.1)}, {"s": (10, 10)}, truth={"s": (true, None)}
    )
    (s,) = info.sessions
    assert s.true_x == pytest.approx((5.5, 7.5, 2.5))
    assert s.median_error_px == pytest.approx(0.0)
    with pytest.raises(ValueError, match="true centres"):
        receptive_field_info({"s": mu}, {"s": mu}, {"s": (10, 10)}, truth={"s": (true[:2], None)})


def test_entropy_bits() -> None:
    assert entropy_bits(np.full(8, 1 / 8)) == pytest.approx(3.0)
    assert entropy_bits(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert entropy_bits(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([1.0, 0.0])


def test_default_queries_are_inside_the_grid() -> None:
    assert default_queries((4, 4)) == ((2, 2), (1, 1), (1, 3), (3, 1))
    assert default_queries((1, 1)) == ((0, 0),)
    assert all(0 <= r < 2 and 0 <= c < 3 for r, c in default_queries((2, 3), k=5))


def _spatial_maps(rows: int, cols: int, regs: int, heads: int) -> np.ndarray:
    """Head 0 attends uniformly; head 1 puts half on the registers and half on its own patch."""
    s = regs + rows * cols
    a = np.zeros((heads, s, s))
    a[0] = 1.0 / s
    for q in range(s):
        a[1, q, :regs] = 0.5 / regs
        a[1, q, q if q >= regs else regs] += 0.5
    return a


def test_attention_info_on_known_maps() -> None:
    rows, cols, r = 2, 3, 2
    spatial = [_spatial_maps(rows, cols, r, 2)]
    t = 4
    causal = np.tril(np.ones((t, t)))
    causal /= causal.sum(-1, keepdims=True)
    temporal = [np.stack([causal, np.eye(t)])]
    info = attention_info(spatial, temporal, (rows, cols), r, queries=[(1, 2)])
    s = r + rows * cols
    assert info.spatial_entropy.shape == (1, 2)
    assert info.spatial_entropy[0, 0] == pytest.approx(math.log2(s))
    assert info.spatial_entropy[0, 1] == pytest.approx(entropy_bits(np.array([0.25, 0.25, 0.5])))
    assert info.register_share[0].tolist() == pytest.approx([r / s, 0.5])
    assert info.register_uniform_share == pytest.approx(r / s)
    # Query patch (1, 2) is token r + 5; head mean = (1/s + 0.5 on itself) / 2 at (1, 2).
    (m,) = info.spatial_query_maps[0]
    assert m.shape == (rows, cols)
    assert m[1, 2] == pytest.approx((1 / s + 0.5) / 2) and m[0, 0] == pytest.approx(0.5 / s)
    assert info.temporal_future_mass == pytest.approx(0.0)
    assert info.temporal_entropy[0].tolist() == pytest.approx(
        [np.mean(np.log2(np.arange(1, t + 1))), 0.0]
    )
    assert info.temporal_max_entropy == pytest.approx(np.mean(np.log2(np.arange(1, t + 1))))
    assert info.temporal_maps[0] == pytest.approx((causal + np.eye(t)) / 2)
    json.dumps(info.to_dict())  # JSON-ready


def test_attention_info_detects_future_mass_and_takes_given_entropies() -> None:
    t = 3
    uniform = np.full((1, t, t), 1 / t)
    info = attention_info(
        [np.ones((1, 1, 1))],
        [uniform],
        (1, 1),
        0,
        causal=False,
        spatial_entropy=np.array([[9.0]]),
    )
    # Query 0 puts 2/3 on the future, query 1 1/3, query 2 none: the mean is 1/3.
    assert info.temporal_future_mass == pytest.approx(1 / 3)
    assert info.temporal_max_entropy == pytest.approx(math.log2(t))
    assert info.spatial_entropy.tolist() == [[9.0]]
    assert info.register_uniform_share is None and info.register_share.tolist() == [[0.0]]


def test_attention_info_rejects_maps_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"expected \(heads, 8, 8\)"):
        attention_info([np.ones((2, 7, 7))], [], (2, 3), 2)


def test_analyze_run_of_a_trained_model(tiny_run: Path, sim_dir: Path) -> None:
    a = analyze_run(tiny_run, [sim_dir], num_samples=16)
    assert a.core_kind == "vivit" and a.notes == ()
    assert a.rf is not None and [s.session for s in a.rf.sessions] == ["sim00", "sim01"]
    units = {
        m["name"]: m["num_units"] for m in json.loads((tiny_run / "sessions.json").read_text())
    }
    for s in a.rf.sessions:
        assert len(s.x) == len(s.true_x) == units[s.session]  # simulated: true centres found
        assert s.median_error_px is not None and 0 <= s.median_error_px < 16 * math.sqrt(2)
        assert all(0 <= x <= 16 for x in s.x)
    att = a.attention
    assert att is not None and a.attention_session == "sim00" and a.attention_samples == 16
    # 16x16 frames, 4x4 tubelets: a 4x4 grid; 8 lags / 2 frames per tubelet: 4 time tokens.
    assert att.grid == (4, 4) and att.num_registers == 2
    assert att.temporal_maps[0].shape == (4, 4)
    assert att.temporal_future_mass == pytest.approx(0.0, abs=1e-6)  # causal
    assert att.spatial_entropy.shape == (1, 2) and att.temporal_entropy.shape == (1, 2)
    assert np.all(att.spatial_entropy <= att.spatial_max_entropy + 1e-4)
    assert np.all((att.register_share > 0) & (att.register_share < 1))
    json.dumps(a.to_dict())


def test_analyze_run_without_data_still_maps_the_readouts(tiny_run: Path) -> None:
    a = analyze_run(tiny_run, None)
    assert a.attention is None and any("--data" in n for n in a.notes)
    assert a.rf is not None and a.rf.sessions[0].true_x == ()


def test_read_truth(sim_dir: Path) -> None:
    truth = read_truth(sim_dir / "sim00.h5")
    assert truth is not None
    centres, spreads = truth
    n = centres.shape[0]
    assert centres.shape == (n, 2) and n > 0 and np.all(np.abs(centres) <= 1)
    assert spreads is not None and spreads.shape == (n,)
    assert read_truth(sim_dir / "truth" / "sim00.h5") is None  # no truth of the truth
