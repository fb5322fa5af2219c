"""The binning helpers added for Allen files: interval samples, flags, overlaps; and frames
read in any order (shuffled movies) or from several templates."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from vivit_hpo.data.binning import (
    flagged_intervals,
    frame_bins,
    overlapping,
    resample_intervals,
)
from vivit_hpo.data.frames import Frames, FrameStack, write_stim
from vivit_hpo.errors import DataError


def test_resample_intervals_weights_each_sample_by_its_overlap() -> None:
    bins = frame_bins(np.arange(5) * 0.1)  # [0, 0.1), ..., [0.4, 0.5)
    # Samples over [0, 0.15), [0.15, 0.3), [0.3, 0.5) (unsorted), valued 1, 2, 4.
    got = resample_intervals(
        np.array([0.3, 0.0, 0.15]), np.array([0.5, 0.15, 0.3]), np.array([4.0, 1.0, 2.0]), bins
    )
    np.testing.assert_allclose(got[:, 0], [1, 1.5, 2, 4, 4])
    # Stamped at the interval starts and averaged as points, bin 1 would read 2, not 1.5.
    gappy = resample_intervals(
        np.array([0.0, 0.35]), np.array([0.1, 0.5]), np.array([1.0, 3.0]), bins
    )
    # Bins 1 and 2 lie in the hole: the midpoints' line (0.05 -> 1, 0.425 -> 3) at their centres.
    np.testing.assert_allclose(gappy[:, 0], [1, 1 + 2 * 0.1 / 0.375, 1 + 2 * 0.2 / 0.375, 3, 3])
    with pytest.raises(DataError, match=r"'x': has samples from 0.300 s to 0.500 s but the"):
        resample_intervals(np.array([0.3]), np.array([0.5]), np.array([1.0]), bins, what="x")


def test_flagged_intervals_hold_each_sample_until_the_next() -> None:
    t = np.arange(8) * 0.1
    flags = np.array([0, 1, 1, 0, 0, 1, 0, 1], bool)
    np.testing.assert_allclose(flagged_intervals(t, flags), [[0.1, 0.3], [0.5, 0.6], [0.7, 0.8]])
    assert flagged_intervals(t, np.zeros(8, bool)).shape == (0, 2)


def test_overlapping_any_amount() -> None:
    bins = frame_bins(np.arange(5) * 0.1)
    assert overlapping(np.array([[0.15, 0.16], [0.4, 0.41]]), bins).tolist() == [0, 1, 0, 0, 1]
    assert overlapping(np.array([[0.1, 0.1]]), bins).tolist() == [0] * 5
    assert not overlapping(np.zeros((0, 2)), bins).any()


def test_frames_in_any_order_and_from_stacked_templates(tmp_path) -> None:
    a = np.arange(6)[:, None, None] * np.ones((1, 2, 3), np.uint8)
    b = 100 + a
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["a"] = a
        f["b"] = b
    with h5py.File(tmp_path / "t.h5") as f:
        fa, fb = Frames(f["a"], what="a"), Frames(f["b"], what="b")
        idx = np.array([5, 0, 3, 3, 1])
        np.testing.assert_array_equal(fa.read(idx), a[idx])
        stack = FrameStack([fa, fb])
        np.testing.assert_array_equal(
            stack.read(np.array([7, 0, 11])), np.stack([b[1], a[0], b[5]])
        )
        assert fa.value_range() == (0.0, 5.0)
        with h5py.File(tmp_path / "s.h5", "w") as out:
            write_stim(out, stack, np.array([6, -1, 2]), grey=50)
            np.testing.assert_array_equal(
                out["stim"][()], np.stack([b[0], np.full((2, 3), 50), a[2]])
            )
