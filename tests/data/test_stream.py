"""Sessions larger than memory: streamed frames, the stream plan, the prefetch thread."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import write_session

from vivit_hpo.config import DataConfig, load_run_config
from vivit_hpo.data import ClipGeometry, load_sessions
from vivit_hpo.data.stream import StreamedFrames, prefetch, stream_plan
from vivit_hpo.training import Trainer


def test_stream_plan() -> None:
    sizes = [4, 3, 5, 1]
    assert stream_plan(sizes, "on", 100) == [True] * 4
    assert stream_plan(sizes, "off", 0) == [False] * 4
    # auto: in order, the ones that still fit stay in memory.
    assert stream_plan(sizes, "auto", 8) == [False, False, True, False]
    assert stream_plan(sizes, "auto", 0) == [True] * 4


@pytest.mark.parametrize("channels", [None, 3])
def test_streamed_batches_equal_in_memory_batches(tmp_path: Path, channels: int | None) -> None:
    path = write_session(tmp_path / "s.h5", t=400, n=3, c=channels, k=2, block_len=40, seed=4)
    cfg = DataConfig(num_lags=5)
    mem = load_sessions([path], cfg)
    disk = load_sessions([path], cfg.model_copy(update={"stream": "on"}))
    assert disk.session("s").streamed and not mem.session("s").streamed
    assert isinstance(disk.session("s").frames, StreamedFrames)
    for geom in (ClipGeometry.window(5), ClipGeometry.make(5, 17, 4)):
        for split, shuffle in (("train", True), ("val", False)):
            a = list(mem.with_clips(geom).batches(split, 7, shuffle=shuffle, seed=1))
            b = list(disk.with_clips(geom).batches(split, 7, shuffle=shuffle, seed=1))
            assert len(a) == len(b) > 0
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x.stim, y.stim) and torch.equal(x.robs, y.robs)
                assert x.behavior is not None and y.behavior is not None
                assert torch.equal(x.behavior, y.behavior) and torch.equal(x.bins, y.bins)


def test_a_streamed_session_never_holds_its_stimulus(tmp_path: Path) -> None:
    t, h, w = 3000, 48, 48  # 6.9 MB of uint8 frames
    path = write_session(tmp_path / "big.h5", t=t, n=2, h=h, w=w, k=None, block_len=100)
    tracemalloc.start()
    try:
        data = load_sessions([path], DataConfig(num_lags=5, stream="auto", host_memory_gb=0.001))
        for _ in data.batches("train", 16, shuffle=True, seed=0, steps=20):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.session("big").streamed  # 6.9 MB does not fit in a 1 MB budget
    assert peak < 0.25 * t * h * w, peak  # a few batches, never the movie
    roomy = load_sessions([path], DataConfig(num_lags=5, stream="auto", host_memory_gb=1.0))
    assert not roomy.session("big").streamed


def test_training_on_a_streamed_session_is_the_same_training(sim_dir: Path) -> None:
    sets = ["model.core.embed_dim=16", "model.core.num_heads=2", "model.core.kernel_size=[2,4,4]"]
    sets += ["model.core.stride=[2,4,4]", "model.core.num_spatial_blocks=1"]
    sets += ["model.core.num_temporal_blocks=1", "data.num_lags=6", "data.clip_frames=14"]
    sets += ["train.epochs=1", "train.steps_per_epoch=4", "train.batch_size=8"]
    sets += ["data.max_val_bins=80"]
    reports = []
    for mode in ("off", "on"):
        cfg = load_run_config(None, [*sets, f"data.stream={mode}"])
        (r,) = list(Trainer(cfg, load_sessions([sim_dir], cfg.data), device="cpu").epochs())
        reports.append(r)
    assert reports[0].train_loss == reports[1].train_loss
    assert reports[0].val_bps == reports[1].val_bps


def test_prefetch_keeps_order_raises_and_stops() -> None:
    assert list(prefetch(iter(range(20)), depth=3)) == list(range(20))

    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("disk gone")

    got = []
    with pytest.raises(ValueError, match="disk gone"):
        for x in prefetch(broken()):
            got.append(x)
    assert got == [1]

    produced = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    gen = prefetch(endless(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # a consumer that stops early: the thread is joined before close returns
    assert threading.active_count() == before
    assert len(produced) <= 3 + 2 + 1  # read ahead by the depth at most, then stopped
    np.testing.assert_array_equal(produced[:3], [0, 1, 2])
