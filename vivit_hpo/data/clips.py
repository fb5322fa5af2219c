"""Clips: which frames a sample holds and which of its bins the model predicts (pure index logic).

A *segment* is a maximal run of bins with one block id and one split label; nothing a model sees
or predicts ever crosses a segment's edge, so no sample's frames reach into another block or
another split. A bin t of a segment starting at ``a`` is a *target* (a sample, in the data
contract's words) when ``t - a >= L - 1``: it has at least ``num_lags`` L frames of history
inside its segment.

A *clip* is ``F`` consecutive frames ``c .. c + F - 1`` starting inside a segment. The core turns
them into temporal tokens; token j ends on clip frame ``e_j`` and, the core being causal, its
output depends on clip frames ``0 .. e_j`` only. The model reads out every token whose history
inside the clip is at least L frames (``e_j >= L - 1``): with temporal stride s these are the
clip offsets ``L - 1, L - 1 + s, ..., F - 1`` (:attr:`ClipGeometry.offsets`), each predicting
the bin its token ends on. ``F`` is rounded down to ``L + m s`` so that the first read-out token
has exactly L frames of history. ``F = L`` is the one-target-per-window mode: a window of L
frames predicting its last bin.

Training draws clip starts at random among every start whose first target lies in the segment
(:func:`train_starts`; clips running past the end are padded and masked as in evaluation), so
random offsets cover every target over an epoch whatever the stride and the segment's length.
Evaluation tiles each segment (:func:`eval_starts`) so that every target is predicted exactly
once with at least L frames of history: chains of clips ``P s`` apart, one chain per stride
phase. A clip that runs past its segment's end reads the segment's last frame again for the
missing frames; the targets there are masked out, and the causal core keeps them from touching
the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CAP_CHUNKS",
    "ClipGeometry",
    "capped_segments",
    "clip_indices",
    "eval_starts",
    "segments",
    "target_bins",
    "train_starts",
]


@dataclass(frozen=True)
class ClipGeometry:
    """The shape of a sample: ``frames`` consecutive frames, targets every ``stride`` bins.

    Attributes:
        num_lags: L, the least history (in frames, the target's own included) of a prediction.
        frames: F, frames per clip (``L + m * stride``; ``F == L`` is one target per window).
        stride: s, the core's temporal token stride (bins between two predicted bins of a clip).
    """

    num_lags: int
    frames: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.num_lags < 1 or self.stride < 1 or self.frames < self.num_lags:
            raise ValueError(f"invalid clip geometry {self}")
        if (self.frames - self.num_lags) % self.stride:
            raise ValueError(f"frames - num_lags must be a multiple of stride: {self}")

    @classmethod
    def window(cls, num_lags: int) -> ClipGeometry:
        """One target per window of ``num_lags`` frames (the data contract's plain sample)."""
        return cls(num_lags=num_lags, frames=num_lags, stride=1)

    @classmethod
    def make(cls, num_lags: int, clip_frames: int | None, stride: int) -> ClipGeometry:
        """``clip_frames`` rounded down to ``L + m * stride`` (None: one target per window)."""
        if clip_frames is None or clip_frames <= num_lags:
            return cls.window(num_lags)
        m = (clip_frames - num_lags) // stride
        return cls(num_lags=num_lags, frames=num_lags + m * stride, stride=stride if m else 1)

    @property
    def is_window(self) -> bool:
        return self.frames == self.num_lags

    @property
    def num_targets(self) -> int:
        """P, the bins one clip predicts."""
        return (self.frames - self.num_lags) // self.stride + 1

    @property
    def offsets(self) -> np.ndarray:
        """(P,) clip-relative predicted bins ``L - 1 + i * s``, the last one ``F - 1``."""
        return self.num_lags - 1 + self.stride * np.arange(self.num_targets, dtype=np.int64)

    def describe(self) -> str:
        if self.is_window:
            return f"windows of {self.num_lags} frames, 1 target each"
        return (
            f"clips of {self.frames} frames, {self.num_targets} targets each "
            f"(every {self.stride} bins, >= {self.num_lags} frames of history)"
        )


def segments(blocks: np.ndarray, split: np.ndarray, *, guard_lags: int = 0) -> np.ndarray:
    """(S, 3) int64 ``(start, end, split)`` of every maximal run of equal (block, split) labels.

    With ``guard_lags`` L > 0, a training segment (split 0) that borders another split inside
    its block (a seeded split's chunk edge, or a file's ``split`` changing inside a block) is
    trimmed so that none of its targets lies within L bins of that split: a bordering end loses
    its last L bins, a bordering start its first bin (its first target, L - 1 bins further on,
    is then L bins past the edge; the frames in between are still its history). The bins cut
    off belong to no segment: they are neither targets nor history. Autocorrelated stimuli and
    responses make a training target just before (or after) a validation bin a near copy of it.
    Block edges are not guarded: blocks are separate recordings (trials) already.

    Args:
        blocks: (T,) block id per bin.
        split: (T,) split label per bin.
        guard_lags: L, the guard (0: none).
    """
    t = blocks.shape[0]
    if t == 0:
        return np.zeros((0, 3), dtype=np.int64)
    change = (blocks[1:] != blocks[:-1]) | (split[1:] != split[:-1])
    starts = np.r_[0, np.flatnonzero(change) + 1]
    ends = np.r_[starts[1:], t]
    labels = split[starts].astype(np.int64)
    if guard_lags > 0:
        # a split edge inside one block, before bin i (i in 1..T-1)
        inner = np.r_[False, (blocks[1:] == blocks[:-1]) & (split[1:] != split[:-1]), False]
        train = labels == 0
        starts = np.where(train & inner[starts], starts + 1, starts)
        ends = np.where(train & inner[ends], ends - guard_lags, ends)
        keep = ends > starts
        starts, ends, labels = starts[keep], ends[keep], labels[keep]
    return np.stack([starts, ends, labels], axis=1).astype(np.int64)


def target_bins(segs: np.ndarray, num_lags: int) -> np.ndarray:
    """(M,) ascending target bins of ``segs`` (S, 2+): every bin with L frames of history."""
    parts = [np.arange(a + num_lags - 1, b, dtype=np.int64) for a, b in segs[:, :2]]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def train_starts(segs: np.ndarray, geom: ClipGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Every start a training clip may take: ``(starts, ends)`` (both (K,) int64).

    Every start whose first target lies inside its segment (``a .. b - L``), as in
    :func:`eval_starts`: a clip that runs past the segment's end is padded and its targets
    there masked (:func:`clip_indices`). So every target of every segment, whatever its phase
    against the stride and however short the segment, is the first target of some start (the
    start ``t - L + 1``), and random starts train every one over an epoch. ``ends[i]`` is the
    end of the segment of ``starts[i]``.
    """
    starts, ends = [], []
    for a, b in segs[:, :2]:
        last = b - geom.num_lags  # the latest start whose first target is inside the segment
        if last < a:
            continue
        starts.append(np.arange(a, last + 1, dtype=np.int64))
        ends.append(np.full(last + 1 - a, b, dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(ends)


def eval_starts(segs: np.ndarray, geom: ClipGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Clip starts that predict every target of ``segs`` exactly once: ``(starts, ends)``.

    For each segment ``[a, b)`` and each stride phase ``phi < s``, clips start at
    ``a + phi + m * P * s`` while their first predicted bin lies inside the segment; the clip
    of phase phi and index m predicts the targets ``a + L - 1 + phi + (m P + i) s``, i < P.
    """
    step = geom.num_targets * geom.stride
    starts, ends = [], []
    for a, b in segs[:, :2]:
        last = b - geom.num_lags  # the latest start whose first target is inside the segment
        if last < a:
            continue
        got = np.concatenate(
            [np.arange(a + phi, last + 1, step, dtype=np.int64) for phi in range(geom.stride)]
        )
        starts.append(got)
        ends.append(np.full(got.size, b, dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(ends)


def clip_indices(
    starts: np.ndarray, ends: np.ndarray, geom: ClipGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame and target indices of a batch of clips.

    Args:
        starts: (B,) first bin of each clip.
        ends: (B,) end (exclusive) of each clip's segment.
        geom: the clip geometry.

    Returns:
        frames (B, F): the bins whose frames the clips hold (past the segment's end, its last
        bin again); targets (B, P): the bins predicted, clamped into the segment; valid (B, P):
        False where the predicted bin lies past the segment's end.
    """
    last = (ends - 1)[:, None]
    frames = np.minimum(starts[:, None] + np.arange(geom.frames, dtype=np.int64), last)
    want = starts[:, None] + geom.offsets[None, :]  # (B, P)
    valid = want <= last
    return frames, np.minimum(want, last), valid


CAP_CHUNKS = 8  # a capped split is cut into chunks of about max_bins / CAP_CHUNKS targets


def capped_segments(
    segs: np.ndarray, num_lags: int, max_bins: int, seed: int | list[int]
) -> np.ndarray:
    """Whole contiguous chunks of the targets of ``segs``, at most ``max_bins`` targets in all.

    The targets of each segment are cut into runs of ``ceil(max_bins / CAP_CHUNKS)`` bins (a
    segment's last run may be shorter); runs are taken in a seeded random order while they fit
    under the cap, so the chunks are spread over the whole split. Each chunk of targets
    ``[t0, t1)`` comes back as the pseudo-segment ``[t0 - L + 1, t1)``: its history frames lie in
    the same segment, and its targets (:func:`target_bins`) are exactly ``t0 .. t1 - 1``, so
    :func:`eval_starts` tiles them completely whatever the clip geometry. The set depends on the
    segments, ``num_lags``, ``max_bins`` and ``seed`` only (never on batch size or clips).

    Args:
        segs: (S, 2+) ``(start, end, ...)`` segments (one split's), in time order.
        num_lags: L.
        max_bins: the most target bins kept.
        seed: seeds ``numpy.random.default_rng``.

    Returns:
        (S', 2) int64 ``(start, end)`` pseudo-segments in time order (``segs`` themselves when
        they hold no more than ``max_bins`` targets).
    """
    if max_bins < 1:
        raise ValueError(f"max_bins={max_bins} must be >= 1")
    size = -(-max_bins // CAP_CHUNKS)
    chunks = [
        (t0, min(t0 + size, int(b)))
        for a, b in segs[:, :2]
        for t0 in range(int(a) + num_lags - 1, int(b), size)
    ]
    if sum(t1 - t0 for t0, t1 in chunks) <= max_bins:
        return segs[:, :2].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(chunks))
    keep, total = [], 0
    for i in order:
        n = chunks[i][1] - chunks[i][0]
        if total + n <= max_bins:
            keep.append(i)
            total += n
    picked = [(chunks[i][0] - num_lags + 1, chunks[i][1]) for i in sorted(keep)]
    return np.array(picked, dtype=np.int64).reshape(-1, 2)
