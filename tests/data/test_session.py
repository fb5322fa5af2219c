"""Splits, samples, windows and batches of loaded sessions."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from data_helpers import session_arrays, write_session

from vivit_hpo.config import DataConfig
from vivit_hpo.data import ClipGeometry, SessionSet, assign_split, load_sessions, sample_mask
from vivit_hpo.data.session import MIN_SPLIT_UNITS, split_units
from vivit_hpo.errors import DataError


def _runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of runs of equal values."""
    edges = np.flatnonzero(x[1:] != x[:-1]) + 1
    bounds = np.r_[0, edges, x.size]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _stored(data: SessionSet, batch: Any) -> np.ndarray:
    """(B, C, F, H, W) a batch's frames in the file's units (the standardisation undone)."""
    m = data.session(batch.session).meta
    return batch.stim.numpy().astype(np.float64) * m.stim_std


def test_sample_mask_keeps_history_inside_blocks_and_splits() -> None:
    blocks = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0])  # the id 0 comes back: a new block
    one = np.zeros(9, np.uint8)
    assert sample_mask(blocks, one, 1).all()
    assert sample_mask(blocks, one, 2).tolist() == [0, 1, 1, 0, 1, 1, 1, 0, 1]
    assert sample_mask(blocks, one, 3).tolist() == [0, 0, 1, 0, 0, 1, 1, 0, 0]
    assert not sample_mask(blocks, one, 5).any()
    # A split boundary inside a block is a segment boundary too.
    # Training bins within L of another split in the same block are no samples (the guard):
    # bin 4 is 1 bin before validation bin 5.
    split = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1], np.uint8)
    assert sample_mask(blocks, split, 2).tolist() == [0, 1, 1, 0, 0, 0, 1, 0, 1]


def test_assign_split_is_seeded_and_keeps_blocks_whole() -> None:
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(100), rng.integers(20, 60, 100))
    kw: dict[str, Any] = dict(val_fraction=0.2, test_fraction=0.1)
    a = assign_split(blocks, seed=3, key="s1", **kw)
    assert a.dtype == np.uint8 and a.shape == blocks.shape
    np.testing.assert_array_equal(a, assign_split(blocks, seed=3, key="s1", **kw))
    assert not np.array_equal(a, assign_split(blocks, seed=4, key="s1", **kw))
    assert not np.array_equal(a, assign_split(blocks, seed=3, key="s2", **kw))
    for b in range(100):
        assert np.unique(a[blocks == b]).size == 1  # a block is never cut
    frac = np.bincount(a, minlength=3) / a.size
    assert abs(frac[1] - 0.2) < 0.03 and abs(frac[2] - 0.1) < 0.03


def test_single_long_block_is_cut_into_chunks_of_seconds() -> None:
    fr = 240.0
    t = int(20 * 60 * fr)  # 20 minutes at 240 Hz
    lengths = np.bincount(split_units(np.zeros(t, np.int64), fr, chunk_s=30.0))
    assert lengths.size == 40 and abs(lengths.mean() - 30 * fr) < 1  # 30 s chunks, not 2 s
    split = assign_split(
        np.zeros(t, np.int64), val_fraction=0.2, test_fraction=0.1, seed=0, frame_rate=fr
    )
    counts = np.bincount(split, minlength=3)
    assert counts[1] > 0 and counts[2] > 0 and counts[0] > counts[1]
    # Each split is made of long contiguous stretches of tens of seconds, not scattered bins.
    assert min(e - s for s, e in _runs(split)) >= 30 * fr - 1
    # A short recording still gets MIN_SPLIT_UNITS units.
    short = split_units(np.zeros(5000, np.int64), 60.0, chunk_s=30.0)
    assert np.bincount(short).size == MIN_SPLIT_UNITS


def test_no_window_reaches_into_another_split(tmp_path: Path) -> None:
    # One long recording without `split`: the seeded chunks are the splits' edges. Float frames
    # hold their own bin index, so a clip's frames say which bins it read.
    path = write_session(
        tmp_path / "long.h5", t=6000, n=2, k=1, block_len=None, stim_dtype=np.float32
    )
    data = load_sessions([path], DataConfig(num_lags=12, split_chunk_s=10.0))
    s = data.session("long")
    assert len(_runs(s.split)) > 3  # the splits alternate along the recording
    for geom in (ClipGeometry.window(12), ClipGeometry.make(12, 40, 4)):
        clips = data.with_clips(geom)
        for code, split in enumerate(("train", "val", "test")):
            batches = list(clips.batches(split, 64, shuffle=split == "train", seed=0))
            assert batches
            for batch in batches:
                read = np.rint(_stored(data, batch)[:, 0, :, 0, 0]).astype(np.int64)  # (B, F)
                assert (s.split[read] == code).all()  # no frame of another split
                assert (np.diff(read, axis=1) >= 0).all() and (np.diff(read, axis=1) <= 1).all()
                ok = batch.bins.numpy() >= 0
                assert (s.split[batch.bins.numpy()[ok]] == code).all()


def test_no_training_target_lies_within_num_lags_of_another_split(tmp_path: Path) -> None:
    # One recording cut into seeded chunks: a training bin just before (or after) a validation
    # or test chunk is a near copy of its neighbours there, so a guard of L bins keeps it out.
    L = 12
    path = write_session(tmp_path / "long.h5", t=6000, n=2, k=None, block_len=None)
    data = load_sessions([path], DataConfig(num_lags=L, split_chunk_s=10.0))
    s = data.session("long")
    assert len(_runs(s.split)) > 3  # training borders other splits on both sides
    other = np.flatnonzero(s.split != 0)
    for geom in (ClipGeometry.window(L), ClipGeometry.make(L, 40, 4)):
        trained = np.unique(
            np.concatenate(
                [
                    b.bins[b.bins >= 0].numpy()
                    for b in data.with_clips(geom).batches(
                        "train", 64, shuffle=True, seed=0, steps=200
                    )
                ]
            )
        )
        for targets in (data.sample_bins("long", "train"), trained):
            gap = np.abs(targets[:, None] - other[None, :]).min(1)
            assert gap.min() > L
    # No wider than that: the nearest training target is L + 1 bins from another split.
    tr = data.sample_bins("long", "train")
    gap = np.abs(tr[:, None] - other[None, :]).min(1)
    assert gap.min() == L + 1
    assert data.num_samples("train") == tr.size


def test_few_blocks_are_cut_within_blocks() -> None:
    blocks = np.repeat([3, 1, 3], [50, 30, 20])  # 3 blocks (< MIN_SPLIT_UNITS)
    units = split_units(blocks)
    assert units.max() + 1 == 10  # chunks of T // MIN_SPLIT_UNITS = 10 bins
    for u in range(10):
        assert np.unique(blocks[units == u]).size == 1


def test_few_units_still_get_validation() -> None:
    kw: dict[str, Any] = dict(val_fraction=0.2, test_fraction=0.1, seed=0)
    assert sorted(assign_split(np.array([0, 0]), **kw).tolist()) == [0, 1]  # 2 units
    assert sorted(assign_split(np.array([4, 4, 4]), **kw).tolist()) == [0, 1, 2]
    many = np.repeat(np.arange(12), 10)
    three = assign_split(many, val_fraction=0.05, test_fraction=0.01, seed=0)
    assert set(np.unique(three)) == {0, 1, 2}


@pytest.fixture()
def two_sessions(tmp_path: Path) -> SessionSet:
    """Different unit counts, frame sizes and behaviour: K=2 and no behaviour."""
    write_session(tmp_path / "a.h5", t=300, n=3, h=8, w=10, k=2, block_len=25, seed=1)
    write_session(tmp_path / "b.h5", t=200, n=5, h=6, w=6, k=None, block_len=20, seed=2)
    return load_sessions([tmp_path], DataConfig(num_lags=7, split_seed=5))


def test_windows_are_causal_inside_one_block_and_match_the_file(
    tmp_path: Path, two_sessions: SessionSet
) -> None:
    data = two_sessions
    raw = session_arrays(t=300, n=3, h=8, w=10, k=2, block_len=25, seed=1)
    s = data.session("a")
    L = 7
    bins = data.sample_bins("a", "train")[::5]
    batch = data.batch("a", bins - L + 1)  # a window starts L - 1 bins before its target
    train_beh = raw["behavior"][data.sample_bins("a", "train")].astype(np.float64)
    beh_mean, beh_std = train_beh.mean(0), train_beh.std(0, ddof=1)
    assert batch.stim.shape == (bins.size, 1, L, 8, 10) and batch.stim.dtype == torch.float32
    assert batch.stim.is_contiguous() and batch.behavior is not None
    assert batch.robs.shape == (bins.size, 1, 3) and batch.num_targets == bins.size
    for i, t in enumerate(bins.tolist()):
        history = np.arange(t - L + 1, t + 1)
        assert (raw["blocks"][history] == raw["blocks"][t]).all()  # one block
        frames = _stored(data, batch)[i, 0]  # (L, H, W); frame value encodes its bin
        np.testing.assert_allclose(frames, raw["stim"][history], rtol=0, atol=1e-3)
        assert round(float(frames[-1, 0, 0])) == t % 256  # the last frame is the target bin
        # Behaviour comes z-scored with the training bins' statistics.
        beh = raw["behavior"][history]
        np.testing.assert_allclose(batch.behavior[i].numpy(), (beh - beh_mean) / beh_std, atol=1e-4)
        np.testing.assert_array_equal(batch.robs[i, 0].numpy(), raw["robs"][t])
        np.testing.assert_array_equal(batch.dfs[i, 0].numpy(), raw["dfs"][t])
    np.testing.assert_array_equal(batch.bins[:, 0].numpy(), bins)
    assert s.frames.dtype == torch.uint8


def test_clips_predict_every_stride_th_bin_and_mask_past_the_segment(
    two_sessions: SessionSet,
) -> None:
    geom = ClipGeometry.make(7, 17, 3)  # 7 + 3 * 3 = 16 frames, targets at 6, 9, 12, 15
    assert (geom.frames, geom.num_targets, geom.offsets.tolist()) == (16, 4, [6, 9, 12, 15])
    data = two_sessions.with_clips(geom)
    raw = session_arrays(t=300, n=3, h=8, w=10, k=2, block_len=25, seed=1)
    # Block 1 is bins 25..49 (if it is one segment); a clip at 25 holds 25..40, one at 40 runs
    # past the end (40..55): frames past 49 repeat bin 49, and its targets past 49 are masked.
    a = data.session("a")
    seg = next((x, y) for x, y, _ in a.segments if x == 25)
    assert seg == (25, 50)
    batch = data.batch("a", [25, 40])
    got = np.rint(_stored(data, batch)[:, 0, :, 0, 0]).astype(int)
    assert got[0].tolist() == list(range(25, 41))
    assert got[1].tolist() == list(range(40, 50)) + [49] * 6
    assert batch.bins.tolist() == [[31, 34, 37, 40], [46, 49, -1, -1]]
    assert batch.num_targets == 6
    np.testing.assert_array_equal(batch.robs[0].numpy(), raw["robs"][[31, 34, 37, 40]])
    assert (batch.dfs[1, 2:] == 0).all()
    np.testing.assert_array_equal(batch.dfs[1, :2].numpy(), raw["dfs"][[46, 49]])


def test_batch_refuses_clips_without_a_target(two_sessions: SessionSet) -> None:
    with pytest.raises(ValueError, match=r"clip start 19 .* has no target"):
        two_sessions.batch("a", [19])  # block 0 ends at 25: 19 + 7 > 25
    with pytest.raises(ValueError, match="has no target"):
        two_sessions.batch("a", [300])
    ok = two_sessions.batch("a", torch.tensor([25, 26]))  # 25 + L - 1 = 31: first sample
    assert ok.bins[:, 0].tolist() == [31, 32]


def test_splits_do_not_leak(two_sessions: SessionSet) -> None:
    for name in two_sessions.names:
        s = two_sessions.session(name)
        parts = [two_sessions.sample_bins(name, sp) for sp in ("train", "val", "test")]
        for code, bins in enumerate(parts):
            assert (s.split[bins] == code).all()  # targets of a split are bins of that split
            assert (np.diff(bins) > 0).all()
        assert len(set(np.concatenate(parts).tolist())) == sum(p.size for p in parts)
        valid = sample_mask(s.blocks, s.split, 7)
        assert sum(p.size for p in parts) == int(valid.sum())
        # Whole blocks are assigned (the files have no split and >= 10 blocks).
        for b in np.unique(s.blocks):
            assert np.unique(s.split[s.blocks == b]).size == 1


def test_split_from_the_file_is_used(tmp_path: Path) -> None:
    arrays = session_arrays(t=120, block_len=30)
    arrays["split"] = np.repeat(np.array([0, 1, 0, 2], np.uint8), 30)
    write_session(tmp_path / "s.h5", arrays)
    data = load_sessions([tmp_path / "s.h5"], DataConfig(num_lags=5))
    assert data.sample_bins("s", "val").tolist() == list(range(34, 60))
    assert data.sample_bins("s", "test").tolist() == list(range(94, 120))
    assert data.num_samples("train") == 2 * 26


def test_no_validation_sample_is_refused(tmp_path: Path) -> None:
    arrays = session_arrays(t=120, block_len=30)
    arrays["split"] = np.zeros(120, np.uint8)
    path = write_session(tmp_path / "s.h5", arrays)
    with pytest.raises(DataError, match=r"s\.h5: split: session 's' has no validation samples"):
        load_sessions([path], DataConfig(num_lags=5))


@pytest.mark.parametrize(
    "geom",
    [
        ClipGeometry.window(7),
        ClipGeometry.make(7, 7 + 4 * 3, 3),  # P = 5, stride 3: three phases
        ClipGeometry.make(7, 30, 1),  # longer than most segments: padded tails
        ClipGeometry.make(7, 9, 2),  # P = 2
    ],
    ids=["window", "stride3", "long", "p2"],
)
def test_eval_clips_predict_every_sample_exactly_once(
    two_sessions: SessionSet, geom: ClipGeometry
) -> None:
    data = two_sessions.with_clips(geom)
    for split in ("train", "val", "test"):
        seen: list[tuple[str, int]] = []
        for batch in data.batches(split, 4, shuffle=False, seed=0):
            assert len(batch) <= 4 and batch.stim.shape[2] == geom.frames
            b = batch.bins.numpy()
            seen.extend((batch.session, int(x)) for x in b[b >= 0])
            assert batch.num_targets == int((b >= 0).sum())
        want = {(n, int(b)) for n in data.names for b in data.sample_bins(n, split)}
        assert len(seen) == len(set(seen))  # never twice
        assert set(seen) == want  # every sample


def test_capped_validation_is_fixed_whole_chunks_spread_over_the_split(tmp_path: Path) -> None:
    write_session(tmp_path / "v.h5", t=4000, n=2, k=None, block_len=40, seed=3)
    data = load_sessions([tmp_path], DataConfig(num_lags=5, val_fraction=0.3))
    every = data.sample_bins("v", "val")

    def capped(geom: ClipGeometry, batch_size: int, seed: int) -> list[int]:
        out: list[int] = []
        clipped = data.with_clips(geom)
        for batch in clipped.batches("val", batch_size, shuffle=False, seed=seed, max_bins=100):
            b = batch.bins.numpy()
            out.extend(b[b >= 0].tolist())
        return out

    got = capped(ClipGeometry.window(5), 4, 0)
    assert len(got) == len(set(got)) and 90 <= len(got) <= 100  # each once, at most the cap
    assert set(got) <= set(every.tolist())
    # The same bins whatever the clips and the batch size; other bins for another seed.
    for geom in (ClipGeometry(5, 13, 2), ClipGeometry(5, 17, 4)):
        other = capped(geom, 3, 0)
        assert sorted(other) == sorted(got) and len(other) == len(got)
    assert set(capped(ClipGeometry.window(5), 4, 1)) != set(got)
    # Whole contiguous chunks of samples (runs of consecutive bins within a segment) ...
    segs = data.eval_segments("v", "val", 100, 0)
    assert len(segs) >= 4
    assert sorted(got) == [t for a, b in segs for t in range(a + 4, b)]
    # ... spread over the whole split, not its first bins in time order.
    assert max(got) > every[int(0.6 * every.size)] and min(got) < every[int(0.4 * every.size)]
    # A cap above the split's size keeps all of it.
    assert data.eval_segments("v", "val", 10**6, 0).tolist() == (
        data.session("v").split_segments("val").tolist()
    )


def test_training_clips_shuffle_interleave_and_repeat(two_sessions: SessionSet) -> None:
    data = two_sessions
    meta = {m.name: m for m in data.metas}

    def run(seed: int, steps: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
        out = []
        for batch in data.batches("train", 8, shuffle=True, seed=seed, steps=steps):
            m = meta[batch.session]
            assert batch.stim.shape[1:] == (1, 7, m.height, m.width)
            assert batch.robs.shape == (len(batch), 1, m.num_units) == batch.dfs.shape
            if m.num_behavior:
                assert batch.behavior is not None
                assert batch.behavior.shape == (len(batch), 7, m.num_behavior)
            else:
                assert batch.behavior is None
            out.append((batch.session, tuple(batch.bins[:, 0].tolist())))
        return out

    one = run(0)
    assert one == run(0)  # deterministic given the seed
    assert one != run(1)
    counts = Counter(b for name, bins in one for b in ((name, x) for x in bins))
    assert set(counts.values()) == {1}
    assert len(counts) == data.num_samples("train")
    sessions = [name for name, _ in one]
    assert sessions != sorted(sessions) and sessions != sorted(sessions, reverse=True)
    assert len(run(0, steps=40)) == 40  # more than one pass: a second pass starts
    assert len(run(0, steps=2)) == 2


def test_training_clips_lie_inside_training_segments(two_sessions: SessionSet) -> None:
    geom = ClipGeometry.make(7, 16, 3)
    data = two_sessions.with_clips(geom)
    targets = 0
    for batch in data.batches("train", 8, shuffle=True, seed=0):
        s = data.session(batch.session)
        b = batch.bins.numpy()
        assert (s.split[b[b >= 0]] == 0).all()
        targets += batch.num_targets
    # One pass trains about as many targets as there are training samples.
    assert 0.7 * data.num_samples("train") <= targets <= 1.1 * data.num_samples("train")


def test_every_target_of_a_short_training_segment_is_trained(tmp_path: Path) -> None:
    # Blocks shorter than a clip (13 < 16 frames) or leaving a remainder (17 = 16 + 1): random
    # clip starts must still make every target bin, of every phase against the stride, a
    # trained (unmasked) target over enough draws.
    lengths = [13, 17, 13, 17, 30, 30]
    blocks = np.repeat(np.arange(len(lengths)), lengths)
    arrays = session_arrays(t=blocks.size, n=2, k=None, block_len=None)
    arrays["blocks"] = blocks.astype(np.int32)
    arrays["split"] = np.repeat(np.array([0, 0, 0, 0, 1, 2], np.uint8), lengths)
    write_session(tmp_path / "short.h5", arrays)
    geom = ClipGeometry.make(4, 16, 3)  # 16 frames, targets at clip offsets 3, 6, 9, 12, 15
    data = load_sessions([tmp_path / "short.h5"], DataConfig(num_lags=4)).with_clips(geom)
    trained: set[int] = set()
    for batch in data.batches("train", 4, shuffle=True, seed=0, steps=300):
        trained.update(batch.bins[batch.bins >= 0].tolist())  # -1: masked, past the end
    assert trained == set(data.sample_bins("short", "train").tolist())


def test_uint8_frames_are_read_once_without_a_float_copy(tmp_path: Path) -> None:
    t, h, w = 3000, 48, 48
    path = write_session(tmp_path / "s.h5", t=t, n=2, h=h, w=w, k=None, block_len=100)
    tracemalloc.start()
    try:
        data = load_sessions([path], DataConfig(num_lags=5))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    frames = data.session("s").frames
    assert frames.dtype == torch.uint8 and frames.shape == (t, 1, h, w)
    assert peak < 1.3 * t * h * w  # one uint8 copy (6.9 MB), nothing the size of a float movie


def test_float_frames_pass_through_and_channels_are_kept(tmp_path: Path) -> None:
    path = write_session(tmp_path / "f.h5", t=90, c=3, h=5, w=4, stim_dtype=np.float16)
    data = load_sessions([path], DataConfig(num_lags=3))
    s = data.session("f")
    assert s.frames.dtype == torch.float16 and s.frames.shape == (90, 3, 5, 4)
    assert data.metas[0].num_channels == 3 and data.input_shape("f") == (3, 3, 5, 4)
    bins = data.sample_bins("f", "train")[:2]
    batch = data.batch("f", bins - 2)
    assert batch.stim.shape == (2, 3, 3, 5, 4) and batch.stim.dtype == torch.float32
    # float frames keep their values up to the standardisation: frame value = its bin
    np.testing.assert_allclose(
        _stored(data, batch)[:, 1, :, 2, 3], bins[:, None] + np.arange(-2, 1), atol=1e-3
    )


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_session_stored_at_any_scale_gives_the_same_batches(tmp_path: Path, stream: str) -> None:
    # One movie stored as uint8 (read as 0..255), float32 0..255 and float32 0..1: each session
    # is scaled by its own training statistics, so the core sees the same numbers.
    rng = np.random.default_rng(3)
    movie = rng.integers(0, 256, (5000, 6, 7), dtype=np.uint8)  # > STIM_STAT_FRAMES train bins
    stored = {"u8": movie, "f255": movie.astype(np.float32), "f01": movie / np.float32(255)}
    cfg = DataConfig(num_lags=5, stream=stream)
    geom = ClipGeometry.make(5, 13, 4)
    batches = {}
    for kind, stim in stored.items():
        arrays = {**session_arrays(t=5000, n=2, h=6, w=7, k=None, block_len=50), "stim": stim}
        path = write_session(tmp_path / kind / "s.h5", arrays)
        data = load_sessions([path], cfg).with_clips(geom)
        batches[kind] = [
            b.stim
            for split, shuffle in (("train", True), ("val", False))
            for b in data.batches(split, 16, shuffle=shuffle, seed=0, steps=5)
        ]
        m = data.metas[0]
        train = np.concatenate(
            [np.arange(a, b) for a, b in data.session("s").split_segments("train")]
        )
        scale = 1 / 255 if kind == "f01" else 1.0
        assert m.stim_mean == pytest.approx(movie[train].mean() * scale, rel=0.01)
        assert m.stim_std == pytest.approx(movie[train].std() * scale, rel=0.01)
    for kind in ("f255", "f01"):
        assert len(batches[kind]) == len(batches["u8"]) == 10
        for x, y in zip(batches[kind], batches["u8"], strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    first = batches["u8"][0]
    # Unit standard deviation, the mean luminance kept as a positive offset (not centred).
    mean = movie.mean() / movie.std()
    assert abs(float(first.mean()) - mean) < 0.1 and 0.9 < float(first.std()) < 1.1


def test_centred_batches_subtract_the_training_mean_and_every_variant_keeps_it(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    movie = rng.integers(100, 256, (3000, 6, 7), dtype=np.uint8)  # a bright movie: mean >> std
    arrays = {**session_arrays(t=3000, n=2, h=6, w=7, k=None, block_len=50), "stim": movie}
    path = write_session(tmp_path / "s.h5", arrays)
    plain = load_sessions([path], DataConfig(num_lags=5))
    centred = load_sessions([path], DataConfig(num_lags=5, center=True))
    m = centred.metas[0]
    variants = [
        centred,
        centred.with_clips(ClipGeometry.make(5, 13, 4)),
        centred.standardised_as([m]),
        centred.to("cpu"),
    ]
    for data in variants:
        (x,) = [b.stim for b in data.batches("train", 64, shuffle=True, seed=0, steps=1)]
        assert abs(float(x.mean())) < 0.15 and 0.9 < float(x.std()) < 1.1
    (y,) = [b.stim for b in plain.batches("train", 64, shuffle=True, seed=0, steps=1)]
    (x,) = [b.stim for b in centred.batches("train", 64, shuffle=True, seed=0, steps=1)]
    torch.testing.assert_close(x, y - m.stim_mean / m.stim_std)  # the same frames, shifted


def test_meta_and_mean_rates_from_the_training_split(tmp_path: Path) -> None:
    raw = session_arrays(t=240, n=4, block_len=30, seed=7)
    path = write_session(tmp_path / "m.h5", raw, frame_rate=120.0, attrs={"name": "mine"})
    with h5py.File(path, "a") as f:
        f.attrs["behavior_names"] = ["speed", "pupil"]
    data = load_sessions([path], DataConfig(num_lags=4))
    meta = data.metas[0]
    assert meta.name == "mine" and data.names == ["mine"]
    assert (meta.num_units, meta.height, meta.width, meta.num_behavior) == (4, 8, 8, 2)
    assert meta.frame_rate == 120.0
    assert data.session("mine").behavior_names == ("speed", "pupil")
    assert meta.behavior_names == ("speed", "pupil")  # the model's shifter reads them here
    assert meta.response_kind == "spikes"  # the default, without the attribute
    tr = data.sample_bins("mine", "train")
    y, m = raw["robs"][tr].astype(float), raw["dfs"][tr] > 0
    want = (y * m).sum(0) / m.sum(0)
    np.testing.assert_allclose(meta.mean_rates, want, rtol=1e-12)


def test_response_kind_reaches_the_meta(tmp_path: Path) -> None:
    path = write_session(tmp_path / "ca.h5", attrs={"response_kind": "calcium"})
    assert load_sessions([path], DataConfig(num_lags=4)).metas[0].response_kind == "calcium"
    with h5py.File(path, "a") as f:
        f.attrs["response_kind"] = "dff"
    with pytest.raises(DataError, match=r"response_kind: attribute is 'dff', not one of"):
        load_sessions([path], DataConfig(num_lags=4))


def test_defaults_without_optional_datasets(tmp_path: Path) -> None:
    arrays = session_arrays(t=400, n=2, k=None, block_len=None)
    del arrays["dfs"]
    path = write_session(tmp_path / "bare.h5", arrays)
    data = load_sessions([path], DataConfig(num_lags=10))
    s = data.session("bare")
    assert bool(s.dfs.all()) and s.behavior is None and (s.blocks == 0).all()
    # One block, no split: still a validation and a test part, and every bin past the first
    # num_lags - 1 of each segment (a run of one split) is a sample, but for the guard of a
    # training run: its first bin and last num_lags bins where it borders another split.
    assert data.num_samples("val") > 0 and data.num_samples("test") > 0
    runs = _runs(s.split)
    assert len(s.segments) == len(runs) > 3
    guard = sum((a > 0) + 10 * (b < 400) for a, b in runs if s.split[a] == 0)
    assert sum(data.num_samples(p) for p in ("train", "val", "test")) == 400 - 9 * len(runs) - guard


def test_to_cpu_keeps_batches_identical(two_sessions: SessionSet) -> None:
    moved = two_sessions.to("cpu")
    assert moved.device == torch.device("cpu") and moved.names == two_sessions.names
    a = next(iter(two_sessions.batches("val", 5, shuffle=False, seed=0)))
    b = next(iter(moved.batches("val", 5, shuffle=False, seed=0)))
    torch.testing.assert_close(a.stim, b.stim)
    with pytest.raises(ValueError, match="split='dev'"):
        two_sessions.num_samples("dev")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_gathers_on_the_device(two_sessions: SessionSet) -> None:
    for mode in ("auto", "on", "off"):
        data = SessionSet(two_sessions.sessions, 7, device_resident=mode).to("cuda")  # type: ignore[arg-type]
        resident = set(data.resident().values())
        assert resident == ({"cpu"} if mode == "off" else {"cuda:0"})
        assert data.session("a").frames.dtype == torch.uint8
        cpu = next(iter(two_sessions.batches("train", 6, shuffle=True, seed=2)))
        gpu = next(iter(data.batches("train", 6, shuffle=True, seed=2)))
        assert gpu.stim.device.type == "cuda" and gpu.robs.device.type == "cuda"
        torch.testing.assert_close(gpu.stim.cpu(), cpu.stim)
        torch.testing.assert_close(gpu.behavior.cpu(), cpu.behavior)  # type: ignore[union-attr]
