"""The sessions of a run, the samples they hold, and batches of clips (:class:`SessionSet`).

A batch holds *clips* (:mod:`vivit_hpo.data.clips`): ``F`` consecutive frames of one segment and
the targets the model predicts from them. ``F = L`` is the plain one-target-per-window sample.
Clips are gathered by index arithmetic on the frame tensor, ``frames[starts[:, None] +
arange(F)]``, on whatever device the frames live; frames become float32 only batch by batch,
after the clip is gathered.

One session in memory and its reading (:class:`Session`, :func:`load_session`) live in
:mod:`vivit_hpo.data.session_file`; the train/val/test split and the samples
(:func:`assign_split`, :func:`sample_mask`) in :mod:`vivit_hpo.data.split`. Both are re-exported
here, where they were first defined.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from einops import rearrange

from vivit_hpo.data.clips import (
    ClipGeometry,
    capped_segments,
    clip_indices,
    eval_starts,
    train_starts,
)
from vivit_hpo.data.contract import read_frame_rate
from vivit_hpo.data.session_file import STIM_STAT_FRAMES, Session, load_session, stimulus_stats
from vivit_hpo.data.split import (
    MIN_SPLIT_UNITS,
    SPLITS,
    assign_split,
    check_split,
    read_split,
    sample_mask,
    split_units,
)
from vivit_hpo.data.types import Batch, SessionMeta
from vivit_hpo.errors import DataError

__all__ = [
    "MIN_SPLIT_UNITS",
    "SPLITS",
    "STIM_STAT_FRAMES",
    "Session",
    "SessionSet",
    "assign_split",
    "load_session",
    "read_frame_rate",
    "read_split",
    "sample_mask",
    "split_units",
    "stimulus_stats",
]

_GIB = 2**30


def _fit_budget(device: torch.device) -> int:
    """Bytes of session data that may go on ``device`` under ``device_resident: auto``.

    Half of the free memory, and never less than 4 GiB left free, so the model, its activations
    and the optimizer state still fit.
    """
    free, _total = torch.cuda.mem_get_info(device)
    return max(0, min(free // 2, free - 4 * _GIB))


class SessionSet:
    """The sessions of a run, the samples they hold, and batches of clips.

    Batches come out on :attr:`device` (the device passed to :meth:`to`; CPU at first). Sessions
    whose data were moved there are gathered there; the others are gathered on the CPU in their
    stored dtype and only the gathered clips are copied over, before conversion to float32.

    Args:
        sessions: the loaded sessions (names unique).
        clips: the clip geometry of the batches (an ``int`` L: one target per window of L).
        device_resident: ``auto`` (move sessions to a CUDA device while they fit in half its
            free memory), ``on`` (move all, or fail), ``off`` (keep them on the CPU).
        center: subtract each session's training mean from its frames before the scaling by
            its std (``data.center``).
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        clips: ClipGeometry | int,
        *,
        device_resident: Literal["auto", "on", "off"] = "auto",
        device: torch.device | str = "cpu",
        center: bool = False,
    ) -> None:
        names = [s.name for s in sessions]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            files = [str(s.path) for s in sessions if s.name == dup[0]]
            raise DataError(
                f"{files[0]}: name: session name {dup[0]!r} is used by {len(files)} files "
                f"({', '.join(files)}); give each file a distinct `name` attribute"
            )
        self.sessions: list[Session] = list(sessions)
        self.clips = clips if isinstance(clips, ClipGeometry) else ClipGeometry.window(clips)
        self.device_resident: Literal["auto", "on", "off"] = device_resident
        self.device = torch.device(device)
        self.center = center
        self._by_name = {s.name: s for s in self.sessions}
        self._eval: dict[tuple[str, str, int | None, int], tuple[np.ndarray, np.ndarray]] = {}

    # --- description
    @property
    def num_lags(self) -> int:
        return self.clips.num_lags

    @property
    def metas(self) -> list[SessionMeta]:
        return [s.meta for s in self.sessions]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sessions]

    def __len__(self) -> int:
        return len(self.sessions)

    def session(self, name: str) -> Session:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no session {name!r}; have {self.names}") from None

    def num_samples(self, split: str) -> int:
        """Samples (target bins) of ``split`` ("train", "val" or "test") over all sessions."""
        return sum(s.num_samples(split, self.num_lags) for s in self.sessions)

    def sample_bins(self, name: str, split: str) -> np.ndarray:
        """(M,) int64 target bins of the samples of ``split`` in session ``name``, ascending."""
        return self.session(name).sample_bins(split, self.num_lags)

    def eval_segments(
        self, name: str, split: str, max_bins: int | None = None, seed: int = 0
    ) -> np.ndarray:
        """The (pseudo-)segments an evaluation of ``split`` in session ``name`` tiles: all of the
        split's, or with ``max_bins`` a seeded set of whole chunks of at most that many target
        bins (:func:`~vivit_hpo.data.clips.capped_segments`, seeded by ``seed`` and the
        session's name), the same whatever the clips or the batch size."""
        segs = self.session(name).split_segments(split)
        if max_bins is None:
            return segs
        return capped_segments(segs, self.num_lags, max_bins, [seed, zlib.crc32(name.encode())])

    def eval_clips(
        self, name: str, split: str, max_bins: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)`` of the clips that predict every sample of ``split`` once (of the
        capped subset with ``max_bins``, see :meth:`eval_segments`)."""
        key = (name, split, max_bins, seed if max_bins is not None else 0)
        if key not in self._eval:
            segs = self.eval_segments(name, split, max_bins, seed)
            self._eval[key] = eval_starts(segs, self.clips)
        return self._eval[key]

    def num_batches(self, split: str, batch_size: int) -> int:
        """Batches in one evaluation pass of :meth:`batches` over ``split``: sum over sessions of
        ceil(clips / batch_size), since a batch never mixes sessions."""
        return sum(-(-self.eval_clips(n, split)[0].size // batch_size) for n in self.names)

    def train_clips_per_pass(self, name: str) -> int:
        """Clips of one training pass over session ``name``: as many as it takes for the clips'
        targets to number the session's training samples."""
        return -(-self.session(name).num_samples("train", self.num_lags) // self.clips.num_targets)

    def num_train_batches(self, batch_size: int) -> int:
        """Batches of one training pass (see :meth:`batches` with ``shuffle=True``)."""
        return sum(-(-self.train_clips_per_pass(n) // batch_size) for n in self.names)

    def input_shape(self, name: str) -> tuple[int, int, int, int]:
        """(C, F, H, W) of one clip's stimulus in session ``name``."""
        m = self.session(name).meta
        return (m.num_channels, self.clips.frames, m.height, m.width)

    # --- variants
    def with_clips(self, clips: ClipGeometry) -> SessionSet:
        """The same sessions (shared, not copied) batched as ``clips``."""
        if clips.num_lags != self.num_lags:
            raise ValueError(
                f"clips of num_lags={clips.num_lags} on sessions loaded with {self.num_lags}"
            )
        return SessionSet(
            self.sessions,
            clips,
            device_resident=self.device_resident,
            device=self.device,
            center=self.center,
        )

    def standardised_as(self, metas: Sequence[SessionMeta]) -> SessionSet:
        """The same sessions, their frames standardised with the stimulus statistics of the
        same-named ``metas`` (a trained run's, so evaluating it feeds the model the numbers it
        was trained with); sessions not in ``metas`` keep their own."""
        stats = {m.name: (m.stim_mean, m.stim_std) for m in metas}
        sessions = [
            replace(
                s,
                meta=replace(s.meta, stim_mean=stats[s.name][0], stim_std=stats[s.name][1]),
            )
            if s.name in stats
            else s
            for s in self.sessions
        ]
        return SessionSet(
            sessions,
            self.clips,
            device_resident=self.device_resident,
            device=self.device,
            center=self.center,
        )

    def to(self, device: torch.device | str) -> SessionSet:
        """A set whose batches come out on ``device``; data move there as ``device_resident`` says.

        Raises:
            DataError: ``device_resident: on`` and the data do not fit on the device.
        """
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        moved: list[Session] = []
        if dev.type == "cpu" or self.device_resident == "off":
            moved = [s.to("cpu") for s in self.sessions]
        elif self.device_resident == "on":
            try:
                moved = [s.to(dev) for s in self.sessions]
            except torch.OutOfMemoryError as e:
                need = sum(s.nbytes() for s in self.sessions) / _GIB
                raise DataError(
                    f"data.device_resident: on, but the sessions ({need:.1f} GiB) do not fit on "
                    f"{dev}; set data.device_resident=auto or off"
                ) from e
        else:  # auto
            budget = _fit_budget(dev) if dev.type == "cuda" else 0
            for s in self.sessions:
                if s.nbytes() <= budget:
                    moved.append(s.to(dev))
                    budget -= s.nbytes()
                else:
                    moved.append(s.to("cpu"))
        return SessionSet(
            moved, self.clips, device_resident=self.device_resident, device=dev, center=self.center
        )

    def resident(self) -> dict[str, str]:
        """Session name -> device its data live on."""
        return {s.name: str(s.device) for s in self.sessions}

    # --- batches
    def batch(
        self,
        name: str,
        starts: np.ndarray | torch.Tensor | Sequence[int],
        ends: np.ndarray | None = None,
    ) -> Batch:
        """Gather the clips that start at ``starts`` in session ``name``.

        Args:
            name: the session.
            starts: (B,) first bin of each clip; each must lie in a segment with at least one
                target from there (``start <= segment end - num_lags``).
            ends: (B,) the end of each start's segment, when the caller knows it.

        Returns:
            A :class:`Batch` on :attr:`device`: stim (B, C, F, H, W) float32, ``frames /
            stim_std`` (``(frames - stim_mean) / stim_std`` with :attr:`center`) with the
            session meta's training statistics; behavior
            (B, F, K) or None; robs and dfs (B, P, N) float32 (dfs 0 at targets past the
            segment's end); bins (B, P) int64 (-1 at those targets).
        """
        s = self.session(name)
        c = (
            starts.detach().cpu().numpy()
            if isinstance(starts, torch.Tensor)
            else np.asarray(starts)
        ).astype(np.int64, copy=False)
        if ends is None:
            ends = self._segment_ends(s, c)
        frame_idx, target_idx, valid = clip_indices(c, ends, self.clips)
        src = s.device
        idx = torch.from_numpy(frame_idx)  # (B, F)
        tgt = torch.from_numpy(target_idx)  # (B, P)
        if src.type == "cuda":
            # From pinned memory the copy is asynchronous: no stream sync per batch.
            idx = idx.pin_memory().to(src, non_blocking=True)
            tgt = tgt.pin_memory().to(src, non_blocking=True)
        x = self._move(s.frames[idx])  # (B, F, C, H, W), stored dtype
        x = rearrange(x, "b f c h w -> b c f h w")
        stim = x.to(torch.float32, memory_format=torch.contiguous_format)  # (B, C, F, H, W)
        # Scaled by the session's training-split std, so sessions stored as uint8 0..255, float
        # 0..1 or float 0..255 reach the shared core at one scale (x is a fresh gather, never
        # the session's own frames: in place is safe). Centred only where the run says so
        # (data.center): uncentred, the mean luminance stays a positive offset and the ViViT's
        # per-token norms keep each token's contrast amplitude (centred, the tiny ViViT of
        # tests/training/test_loop.py learned slower: +0.026 against over +0.03 val BPS after
        # 240 steps); the CNN and LN yardsticks learn faster centred.
        if self.center:
            stim.sub_(s.meta.stim_mean)
        stim.div_(s.meta.stim_std)
        beh = None
        if s.behavior is not None:
            beh = self._move(s.behavior[idx])  # (B, F, K)
        dfs = self._move(s.dfs[tgt]).to(torch.float32)  # (B, P, N)
        if not valid.all():
            dfs = dfs * self._move(torch.from_numpy(valid)).to(torch.float32)[..., None]
        return Batch(
            session=name,
            stim=stim,
            behavior=beh,
            robs=self._move(s.robs[tgt]).to(torch.float32),  # (B, P, N)
            dfs=dfs,
            bins=self._move(torch.from_numpy(np.where(valid, target_idx, -1))),
            num_targets=int(valid.sum()),
        )

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on :attr:`device`; from the CPU to a GPU through pinned memory, asynchronously
        (the batch is usually gathered in a prefetch thread while the step runs)."""
        if t.device == self.device:
            return t
        if self.device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def _segment_ends(self, s: Session, starts: np.ndarray) -> np.ndarray:
        """The end of the segment of each start; ValueError for a start with no target."""
        if starts.ndim != 1:
            raise ValueError("starts must be (B,)")
        seg = np.searchsorted(s.segments[:, 0], starts, side="right") - 1
        bad = (seg < 0) | (starts >= s.num_bins)
        seg = np.clip(seg, 0, len(s.segments) - 1)
        ends = s.segments[seg, 1]
        bad |= starts > ends - self.num_lags
        if bad.any():
            first = int(starts[np.flatnonzero(bad)[0]])
            raise ValueError(
                f"clip start {first} of session {s.name!r} has no target: a clip must start "
                f"at least num_lags={self.num_lags} bins before the end of its segment (one "
                "block, one split)"
            )
        return ends

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        steps: int | None = None,
        max_bins: int | None = None,
    ) -> Iterator[Batch]:
        """Batches of clips of one split; each batch holds clips of one session only.

        With ``shuffle=False`` (evaluation) the sessions come in order, each tiled by
        :meth:`eval_clips` so that every sample of the split is predicted exactly once;
        ``max_bins`` keeps, per session, whole chunks of at most that many samples drawn with
        ``seed`` and spread over the whole split (:meth:`eval_segments`: the same bins for the
        same seed whatever the batch size or clip geometry), every sample in them predicted
        exactly once, and ``steps`` stops after that many batches in all.

        With ``shuffle=True`` (training) each session gets :meth:`train_clips_per_pass` clips
        at random starts (without replacement where it has that many), cut into batches, and
        the batches of all sessions are shuffled together, so sessions interleave at random in
        proportion to their sample counts; everything is drawn from
        ``numpy.random.default_rng(seed)``, so the same seed gives the same batches. ``steps``
        gives exactly that many batches, starting further passes with fresh draws when one pass
        holds fewer.

        Args:
            split: "train", "val" or "test".
            batch_size: clips per batch (a session's last batch of a pass may be smaller).
            shuffle: training order (True) or evaluation order (False).
            seed: the shuffle seed, and the seed of the ``max_bins`` subset
                (``DataConfig.split_seed`` for a study's validation).
            steps: see above; None for one pass.
            max_bins: see above (evaluation only).

        Yields:
            :class:`Batch` on :attr:`device`.
        """
        check_split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if steps is not None and steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        if not shuffle:
            done = 0
            for s in self.sessions:
                starts, ends = self.eval_clips(s.name, split, max_bins, seed)
                for i in range(0, starts.size, batch_size):
                    if steps is not None and done >= steps:
                        return
                    yield self.batch(s.name, starts[i : i + batch_size], ends[i : i + batch_size])
                    done += 1
            return
        pools = {s.name: train_starts(s.split_segments(split), self.clips) for s in self.sessions}
        if not any(p[0].size for p in pools.values()):
            return
        rng = np.random.default_rng(seed)
        done = 0
        while True:
            plan: list[tuple[str, np.ndarray, np.ndarray]] = []
            for s in self.sessions:
                starts, ends = pools[s.name]
                if not starts.size:
                    continue
                n = self.train_clips_per_pass(s.name) if split == "train" else starts.size
                pick = rng.choice(starts.size, size=n, replace=n > starts.size)
                plan.extend(
                    (s.name, starts[pick[i : i + batch_size]], ends[pick[i : i + batch_size]])
                    for i in range(0, n, batch_size)
                )
            for j in rng.permutation(len(plan)):
                if steps is not None and done >= steps:
                    return
                name, starts, ends = plan[j]
                yield self.batch(name, starts, ends)
                done += 1
            if steps is None:
                return
