"""Presentation tables -> bins: frames, grey rows, time order, blocks, repeats, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from vivit_hpo.data.presentations import (
    GREY,
    PresentationTable,
    presentation_bins,
    template_times_reason,
)
from vivit_hpo.errors import DataError

DT = 0.1


def _table(
    name: str, t0: float, frames: list[float], block: list[float] | None = None, num_frames: int = 4
) -> PresentationTable:
    start = t0 + np.arange(len(frames)) * DT
    return PresentationTable(
        name=name,
        start=start,
        stop=start + DT,
        frame=np.asarray(frames, dtype=np.float64),
        block=None if block is None else np.asarray(block, dtype=np.float64),
        num_frames=num_frames,
    )


def test_rows_become_bins_in_time_order_with_grey_rows() -> None:
    late = _table("b", 10.0, [3, 1, -1, 0, np.nan, 2])
    early = _table("a", 0.0, [0, 1, 2, 3])
    pb = presentation_bins([late, early])
    np.testing.assert_allclose(pb.bins.start, np.r_[np.arange(4), 100 + np.arange(6)] * DT)
    np.testing.assert_allclose(pb.bins.stop - pb.bins.start, DT)
    assert pb.frame_index.tolist() == [0, 1, 2, 3, 3, 1, GREY, 0, GREY, 2]
    assert pb.table.tolist() == [1] * 4 + [0] * 6 and pb.row.tolist() == [0, 1, 2, 3, *range(6)]
    assert pb.bins.frame_rate == pytest.approx(1 / DT)


def test_blocks_at_stimulus_block_changes_and_gaps() -> None:
    # One table: block 2 then block 3 back to back (no pause), a pause of 2 intervals, block 3.
    t = _table("a", 0.0, [0, 1, 2, 3, 0, 1, 2, 3], block=[2, 2, 2, 2, 3, 3, 3, 3])
    start = np.r_[t.start[:6], t.start[6:] + 2 * DT]
    t = PresentationTable("a", start, start + DT, t.frame, t.block, 4)
    pb = presentation_bins([t])
    assert pb.blocks.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert pb.bins.gap_before.tolist() == [0, 0, 0, 0, 1, 0, 1, 0]
    # The pause cuts the block but not the repeat; the new stimulus_block starts one.
    assert pb.repeat.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_repeats_in_order_shuffled_and_held_frames() -> None:
    ordered = _table("a", 0.0, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    assert presentation_bins([ordered]).repeat.tolist() == [0] * 4 + [1] * 4 + [2] * 2
    shuffled = _table("b", 0.0, [2, 0, 3, 1, -1, 1, 3, 0, 2, np.nan])
    # A grey row belongs to the repeat before it; the next permutation revisits frame 1.
    assert presentation_bins([shuffled]).repeat.tolist() == [0] * 5 + [1] * 5
    held = _table("c", 0.0, [0, 0, 1, 1, 2, 2, 3, 3, 0, 0])  # a 15 Hz movie on 30 Hz rows
    assert presentation_bins([held]).repeat.tolist() == [0] * 8 + [1] * 2


def test_rounding_overlaps_are_trimmed_and_real_ones_refused() -> None:
    t = _table("a", 0.0, [0, 1, 2])
    nudged = PresentationTable("a", t.start, t.stop + 0.0005, t.frame, None, 4)
    pb = presentation_bins([nudged])
    np.testing.assert_allclose(pb.bins.stop[:2], t.start[1:])  # ends where the next begins
    with pytest.raises(
        DataError, match=r"presentations overlap: row 0 of a \(0 to 0.1 s\) and row 0 of b "
    ):
        presentation_bins([_table("a", 0.0, [0, 1, 2]), _table("b", 0.05, [0])])


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([0, 4], r"presentations a: row 1 shows frame 4 but the template has 4 frames \(0..3\)"),
        ([0, -2], r"row 1 shows frame -2 but the template has 4 frames"),
        ([0.5, 1], r"row 0 shows frame 0.5; a frame must be a whole number"),
        ([0, np.inf], r"row 1 shows frame inf"),
        ([1], r"1 row\(s\) in all; a session needs at least two bins"),
    ],
)
def test_bad_frames_are_refused(frames: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        presentation_bins([_table("a", 0.0, frames)])


def test_bad_times_are_refused() -> None:
    t = _table("a", 0.0, [0, 1, 2])
    back = PresentationTable("a", t.start, t.start, t.frame, None, 4)
    with pytest.raises(DataError, match=r"row 0 runs from 0.0 s to 0.0 s; every row needs"):
        presentation_bins([back])
    with pytest.raises(DataError, match="no presentation table given"):
        presentation_bins([])


def test_template_timestamps() -> None:
    assert template_times_reason(np.full(5, np.nan)) == "its timestamps are NaN"
    assert "0, 1, ..., 4 (frame indices" in str(template_times_reason(np.arange(5.0)))
    assert template_times_reason(np.arange(5) / 30.0) is None
    assert template_times_reason(None) is None
    assert template_times_reason(np.r_[0.0, np.nan]) is None  # a broken timeline, not a template
