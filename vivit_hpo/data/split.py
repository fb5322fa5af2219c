"""The train/val/test split of a session, and which bins are samples.

A *segment* is a maximal run of bins with one block id and one split label
(:func:`~vivit_hpo.data.clips.segments`). A bin t is a *sample* (a target) for ``num_lags`` L
when its L-frame history lies inside its segment; its split is the split of its segment. So a
sample never spans two blocks and its frames never reach into another split: the targets of one
split never enter another, and neither do its frames. Where a block holds two splits (a seeded
split's chunks, or a file's ``split`` changing inside a block), the training segment keeps a
guard of L bins: no training target lies within L bins of a validation or test bin, which the
stimulus' and the responses' autocorrelation would otherwise make near copies of each other.

When a file has no ``split``, whole split units are assigned by a seeded draw
(:func:`assign_split`): the blocks themselves, or, when a file has fewer than
``MIN_SPLIT_UNITS`` blocks (one long recording, say), contiguous chunks of
``data.split_chunk_s`` seconds (30 s by default; shorter when the recording would otherwise
give fewer than ``MIN_SPLIT_UNITS`` of them) cut out of its blocks, so that such a file still
gets a validation and a test part made of long stretches of time rather than scattered bins.
A file with a ``repeat`` dataset (a movie shown several times) has whole repeats assigned
instead (``data.split_by``, :mod:`vivit_hpo.data.repeats`).
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np

from vivit_hpo.config import DataConfig
from vivit_hpo.data.clips import segments, target_bins
from vivit_hpo.data.contract import read_frame_rate
from vivit_hpo.data.repeats import repeat_units

__all__ = [
    "MIN_SPLIT_UNITS",
    "SPLITS",
    "SPLIT_CODE",
    "assign_split",
    "check_split",
    "read_split",
    "sample_mask",
    "split_units",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}  # a split's label in a file's ``split``
MIN_SPLIT_UNITS = 10


def check_split(split: str) -> None:
    """ValueError unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split={split!r}; use one of {SPLITS}")


def sample_mask(blocks: np.ndarray, split: np.ndarray, num_lags: int) -> np.ndarray:
    """(T,) bool: True where bin t has its whole ``num_lags`` history inside its segment (one
    block, one split; training segments keep a guard of ``num_lags`` bins from another split,
    see :func:`~vivit_hpo.data.clips.segments`)."""
    mask = np.zeros(blocks.shape[0], dtype=bool)
    mask[target_bins(segments(blocks, split, guard_lags=num_lags), num_lags)] = True
    return mask


def _run_ids(blocks: np.ndarray) -> np.ndarray:
    """(T,) index of the run (block) of equal consecutive values each bin lies in."""
    if blocks.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return (np.cumsum(np.r_[True, blocks[1:] != blocks[:-1]]) - 1).astype(np.int64)


def split_units(blocks: np.ndarray, frame_rate: float = 60.0, chunk_s: float = 30.0) -> np.ndarray:
    """(T,) int64 id of the unit of time a seeded split assigns whole.

    The units are the blocks (runs of equal ``blocks`` values). With fewer than
    ``MIN_SPLIT_UNITS`` blocks, each block is cut into contiguous chunks of about ``chunk_s``
    seconds, or of ``T // MIN_SPLIT_UNITS`` bins when that is shorter, so a single long
    recording still yields at least ``MIN_SPLIT_UNITS`` units to split. Samples never cross a
    chunk boundary once the chunks carry different split labels (segments are runs of one block
    and one split).
    """
    t = blocks.shape[0]
    run_id = _run_ids(blocks)
    n_runs = int(run_id[-1]) + 1 if t else 0
    if n_runs >= MIN_SPLIT_UNITS or t == 0:
        return run_id
    chunk = max(1, min(round(chunk_s * frame_rate), t // MIN_SPLIT_UNITS))
    out = np.empty(t, dtype=np.int64)
    next_id = 0
    ends = np.r_[np.flatnonzero(np.diff(run_id)) + 1, t]
    begin = 0
    for end in ends:
        n = end - begin
        k = max(1, round(n / chunk))
        # k nearly equal chunks covering [begin, end)
        out[begin:end] = next_id + (np.arange(n) * k) // n
        next_id += k
        begin = end
    return out


def assign_split(
    blocks: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    key: str = "",
    frame_rate: float = 60.0,
    chunk_s: float = 30.0,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """A seeded train/val/test label per bin that keeps each split unit whole.

    Units (:func:`split_units`, or ``units`` where given: a file's repeats) are shuffled with
    ``numpy.random.default_rng([seed, crc32(key)])`` (``key`` is the session name, so two
    sessions of the same shape get different draws), then laid end to end: a unit whose
    midpoint falls in the first ``test_fraction`` of the bins goes to test, the next
    ``val_fraction`` to validation, the rest to training. With 2 or more units validation gets
    at least one and training keeps at least one; with 3 or more, test gets one if
    ``test_fraction > 0``.

    Args:
        blocks: (T,) block id per bin.
        val_fraction, test_fraction: the share of bins to put in each.
        seed: the split seed (``DataConfig.split_seed``).
        key: mixed into the seed (the session name).
        frame_rate, chunk_s: bins per second and the chunk length of a file with few blocks.
        units: (T,) dense unit id of each bin (:func:`~vivit_hpo.data.repeats.repeat_units`),
            in place of the blocks or chunks.

    Returns:
        (T,) uint8, 0 train, 1 val, 2 test.
    """
    if units is None:
        units = split_units(np.asarray(blocks), frame_rate, chunk_s)
    t = units.shape[0]
    if t == 0:
        return np.zeros(0, dtype=np.uint8)
    n_units = int(units.max()) + 1
    lengths = np.bincount(units, minlength=n_units)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    order = rng.permutation(n_units)
    mid = np.cumsum(lengths[order]) - lengths[order] / 2
    label_in_order = np.where(
        mid < test_fraction * t, 2, np.where(mid < (test_fraction + val_fraction) * t, 1, 0)
    ).astype(np.uint8)
    if n_units >= 3 and test_fraction > 0 and not (label_in_order == 2).any():
        label_in_order[0] = 2
    if n_units >= 2 and not (label_in_order == 1).any():
        free = np.flatnonzero(label_in_order != 2)
        label_in_order[free[0] if free.size > 1 else n_units - 1] = 1
    if not (label_in_order == 0).any():
        label_in_order[-1] = 0
    labels = np.empty(n_units, dtype=np.uint8)
    labels[order] = label_in_order
    return labels[units]


def read_split(f: h5py.File, name: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The block and split label of each bin of an open, valid session file.

    Args:
        f: the open file.
        name: the session name (keys the seeded split).
        cfg: the split settings, used when the file has no ``split``.

    Returns:
        blocks (T,) int64 (zeros when absent), split (T,) uint8, and where the split came from:
        "file", "seeded" (blocks or chunks of time) or "seeded by repeat" (whole repeats:
        :func:`~vivit_hpo.data.repeats.repeat_units`).
    """
    t = int(f["robs"].shape[0])
    blocks = np.asarray(f["blocks"][()], dtype=np.int64) if "blocks" in f else np.zeros(t, np.int64)
    if "split" in f:
        return blocks, np.asarray(f["split"][()], dtype=np.uint8), "file"
    units = repeat_units(f, cfg)
    split = assign_split(
        blocks,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        key=name,
        frame_rate=read_frame_rate(f),
        chunk_s=cfg.split_chunk_s,
        units=units,
    )
    return blocks, split, "seeded" if units is None else "seeded by repeat"
