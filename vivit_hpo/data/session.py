"""Sessions in memory, the train/val/test split, and batches of samples.

Samples and splits
------------------
A bin t is a *sample* for ``num_lags`` L when its L-frame history ``t-L+1 .. t`` lies inside one
block (a run of equal ``blocks`` values); its input is that history (frames and behaviour) and
its target is ``robs[t]`` with mask ``dfs[t]``. The sample belongs to split s when its *target*
bin is in s (``split[t] == s``). The history may hold frames of bins from another split: those
frames are stimulus, never targets, and no count other than ``robs[t]`` reaches the model, so the
targets of one split never enter another (a training sample's target is always a training bin).

When a file has no ``split``, whole split units are assigned by a seeded draw
(:func:`assign_split`): the blocks themselves, or, when a file has fewer than
``MIN_SPLIT_UNITS`` blocks (one long recording, say), contiguous chunks of about
``T // 20`` bins (at most ``MAX_CHUNK`` = 500) cut out of its blocks, so that such a file still
gets a validation and a test part made of long stretches of time rather than scattered bins.

Memory
------
``stim`` is read once, in its stored dtype, straight into one preallocated array (uint8 stays
uint8: a 51x51 movie of 500,000 frames is 1.3 GB, not 5.2 GB); frames become float32 only batch by
batch, after the window is gathered. Windows are gathered by index arithmetic on the frame tensor,
``frames[bins[:, None] + arange(-L + 1, 1)]``, on whatever device the frames live.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import torch
from einops import rearrange

from vivit_hpo.config import DataConfig
from vivit_hpo.data.contract import read_name
from vivit_hpo.data.types import Batch, SessionMeta
from vivit_hpo.errors import DataError

__all__ = [
    "MAX_CHUNK",
    "MIN_SPLIT_UNITS",
    "SPLITS",
    "Session",
    "SessionSet",
    "assign_split",
    "load_session",
    "read_split",
    "sample_mask",
    "split_units",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
MIN_SPLIT_UNITS = 10
MAX_CHUNK = 500
_GIB = 2**30


# ----------------------------------------------------------------------------- pure index logic


def _run_starts(blocks: np.ndarray) -> np.ndarray:
    """(T,) index of the first bin of the run (block) each bin lies in."""
    t = blocks.shape[0]
    is_start = np.ones(t, dtype=bool)
    is_start[1:] = blocks[1:] != blocks[:-1]
    starts = np.where(is_start, np.arange(t), 0)
    return np.maximum.accumulate(starts) if t else starts


def sample_mask(blocks: np.ndarray, num_lags: int) -> np.ndarray:
    """(T,) bool: True where bin t has its whole ``num_lags`` history inside its block.

    Blocks are runs of equal consecutive ``blocks`` values; a sample never spans two runs.
    """
    t = np.arange(blocks.shape[0])
    return (t - _run_starts(blocks)) >= num_lags - 1


def split_units(blocks: np.ndarray) -> np.ndarray:
    """(T,) int64 id of the unit of time a seeded split assigns whole.

    The units are the blocks (runs of equal ``blocks`` values). With fewer than
    ``MIN_SPLIT_UNITS`` blocks, each block is cut into contiguous chunks of about
    ``clip(T // 20, 1, MAX_CHUNK)`` bins, so a single long recording still yields about 20 (or
    more) units to split; chunk boundaries are split boundaries only, not block boundaries (a
    sample's history may cross them, see the module docstring).
    """
    t = blocks.shape[0]
    starts = _run_starts(blocks)
    run_id = np.cumsum(np.r_[True, blocks[1:] != blocks[:-1]]) - 1 if t else starts
    n_runs = int(run_id[-1]) + 1 if t else 0
    if n_runs >= MIN_SPLIT_UNITS or t == 0:
        return run_id.astype(np.int64)
    chunk = int(np.clip(t // 20, 1, MAX_CHUNK))
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
) -> np.ndarray:
    """A seeded train/val/test label per bin that keeps each split unit whole.

    Units (:func:`split_units`) are shuffled with ``numpy.random.default_rng([seed,
    crc32(key)])`` (``key`` is the session name, so two sessions of the same shape get different
    draws), then laid end to end: a unit whose midpoint falls in the first ``test_fraction`` of
    the bins goes to test, the next ``val_fraction`` to validation, the rest to training. With 2
    or more units validation gets at least one and training keeps at least one; with 3 or more,
    test gets one if ``test_fraction > 0``.

    Args:
        blocks: (T,) block id per bin.
        val_fraction, test_fraction: the share of bins to put in each.
        seed: the split seed (``DataConfig.split_seed``).
        key: mixed into the seed (the session name).

    Returns:
        (T,) uint8, 0 train, 1 val, 2 test.
    """
    units = split_units(np.asarray(blocks))
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


# ----------------------------------------------------------------------------- one session


@dataclass(frozen=True)
class Session:
    """One session held in memory (CPU or GPU).

    Attributes:
        meta: what a model needs (units, frame size, behaviour K, mean rates).
        path: the file it was read from.
        frames: (T, C, H, W) the stimulus in its stored dtype (uint8, float16 or float32).
        robs: (T, N) float32 counts.
        dfs: (T, N) bool, True where a count is valid.
        behavior: (T, K) float32, or None.
        behavior_names: K names (from the file, else ``behavior_0..``).
        blocks: (T,) int64 block id per bin (numpy, CPU).
        split: (T,) uint8 split label per bin (numpy, CPU).
        bins: split name -> (S,) int64 target bins of the samples of that split, ascending.
        stim_scale: batches carry ``frames / stim_scale``: 255 for uint8 frames (0..255 becomes
            0..1, the contract's reading of uint8), 1 for float frames (as stored).
    """

    meta: SessionMeta
    path: Path
    frames: torch.Tensor
    robs: torch.Tensor
    dfs: torch.Tensor
    behavior: torch.Tensor | None
    behavior_names: tuple[str, ...]
    blocks: np.ndarray
    split: np.ndarray
    bins: dict[str, np.ndarray]
    stim_scale: float = 1.0

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def device(self) -> torch.device:
        return self.frames.device

    @property
    def num_bins(self) -> int:
        return int(self.frames.shape[0])

    def nbytes(self) -> int:
        """Bytes of the tensors that :meth:`to` moves."""
        ts = [self.frames, self.robs, self.dfs] + (
            [self.behavior] if self.behavior is not None else []
        )
        return sum(t.numel() * t.element_size() for t in ts)

    def to(self, device: torch.device | str) -> Session:
        """A copy whose tensors live on ``device`` (frames keep their dtype)."""
        return replace(
            self,
            frames=self.frames.to(device),
            robs=self.robs.to(device),
            dfs=self.dfs.to(device),
            behavior=None if self.behavior is None else self.behavior.to(device),
        )


def _read_attr_list(f: h5py.File, key: str) -> list[str] | None:
    raw = f.attrs.get(key)
    if raw is None:
        return None
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(raw).ravel()]


def read_split(f: h5py.File, name: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The block and split label of each bin of an open, valid session file.

    Args:
        f: the open file.
        name: the session name (keys the seeded split).
        cfg: the split settings, used when the file has no ``split``.

    Returns:
        blocks (T,) int64 (zeros when absent), split (T,) uint8, and where the split came from:
        "file" or "seeded".
    """
    t = int(f["robs"].shape[0])
    blocks = np.asarray(f["blocks"][()], dtype=np.int64) if "blocks" in f else np.zeros(t, np.int64)
    if "split" in f:
        return blocks, np.asarray(f["split"][()], dtype=np.uint8), "file"
    split = assign_split(
        blocks,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        key=name,
    )
    return blocks, split, "seeded"


def load_session(path: str | Path, cfg: DataConfig) -> Session:
    """Read one session file that :func:`~vivit_hpo.data.contract.validate_file` passed.

    The stimulus is read once with ``read_direct`` into a preallocated array of its stored dtype;
    (T, H, W) becomes (T, 1, H, W) as a view. Counts become float32, ``dfs`` bool (all True when
    absent), behaviour is z-scored per channel with the training bins' mean and standard
    deviation (frames are kept as stored), ``blocks`` one block when absent, and ``split`` is
    drawn by :func:`assign_split` (``cfg.val_fraction``, ``cfg.test_fraction``,
    ``cfg.split_seed``, keyed by the session name) when absent.

    Args:
        path: the session file.
        cfg: ``num_lags`` and the split settings.

    Returns:
        The session on the CPU.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        name = read_name(f, path)
        ds = f["stim"]
        stim = np.empty(ds.shape, dtype=ds.dtype)
        if stim.size:
            ds.read_direct(stim)
        frames = torch.from_numpy(stim)
        if frames.ndim == 3:
            frames = frames.unsqueeze(1)  # (T, 1, H, W), a view
        robs_np = np.asarray(f["robs"][()], dtype=np.float32)
        t, n = robs_np.shape
        dfs_np = np.asarray(f["dfs"][()]) > 0 if "dfs" in f else np.ones((t, n), dtype=bool)
        behavior: torch.Tensor | None = None
        names: tuple[str, ...] = ()
        if "behavior" in f:
            behavior = torch.from_numpy(np.asarray(f["behavior"][()], dtype=np.float32))
            k = behavior.shape[1]
            got = _read_attr_list(f, "behavior_names")
            names = tuple(got) if got is not None else tuple(f"behavior_{i}" for i in range(k))
        blocks, split, _ = read_split(f, name, cfg)
        frame_rate = float(np.asarray(f.attrs["frame_rate"]).item())

    valid = sample_mask(blocks, cfg.num_lags)
    bins = {s: np.flatnonzero(valid & (split == _SPLIT_CODE[s])).astype(np.int64) for s in SPLITS}
    tr = bins["train"]
    if behavior is not None and tr.size:
        # z-score each channel with training-bin statistics: files store behaviour in their own
        # units (degrees, cm/s, pixels), and the modulator's gain expects unit-scale input.
        train_beh = behavior[torch.from_numpy(tr)]
        mean, std = train_beh.mean(0), train_beh.std(0)
        behavior = (behavior - mean) / torch.where(std > 1e-6, std, torch.ones_like(std))
    valid_train = dfs_np[tr]
    n_valid = valid_train.sum(0)
    spikes = np.where(valid_train, robs_np[tr], 0.0).sum(0, dtype=np.float64)
    mean_rates = np.where(n_valid > 0, spikes / np.maximum(n_valid, 1), 0.0)
    meta = SessionMeta(
        name=name,
        num_units=n,
        num_channels=int(frames.shape[1]),
        height=int(frames.shape[2]),
        width=int(frames.shape[3]),
        num_behavior=0 if behavior is None else int(behavior.shape[1]),
        frame_rate=frame_rate,
        mean_rates=tuple(float(x) for x in mean_rates),
    )
    return Session(
        meta=meta,
        path=path,
        frames=frames,
        robs=torch.from_numpy(robs_np),
        dfs=torch.from_numpy(dfs_np),
        behavior=behavior,
        behavior_names=names,
        blocks=blocks,
        split=split,
        bins=bins,
        stim_scale=255.0 if frames.dtype == torch.uint8 else 1.0,
    )


# ----------------------------------------------------------------------------- the set


def _fit_budget(device: torch.device) -> int:
    """Bytes of session data that may go on ``device`` under ``device_resident: auto``.

    Half of the free memory, and never less than 4 GiB left free, so the model, its activations
    and the optimizer state still fit.
    """
    free, _total = torch.cuda.mem_get_info(device)
    return max(0, min(free // 2, free - 4 * _GIB))


class SessionSet:
    """The sessions of a run and the samples they hold.

    Batches come out on :attr:`device` (the device passed to :meth:`to`; CPU at first). Sessions
    whose data were moved there are gathered there; the others are gathered on the CPU in their
    stored dtype and only the gathered window is copied over, before conversion to float32.

    Args:
        sessions: the loaded sessions (names unique).
        num_lags: L, frames of history per sample.
        device_resident: ``auto`` (move sessions to a CUDA device while they fit in half its
            free memory), ``on`` (move all, or fail), ``off`` (keep them on the CPU).
    """

    def __init__(
        self,
        sessions: Sequence[Session],
        num_lags: int,
        *,
        device_resident: Literal["auto", "on", "off"] = "auto",
        device: torch.device | str = "cpu",
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
        self.num_lags = num_lags
        self.device_resident: Literal["auto", "on", "off"] = device_resident
        self.device = torch.device(device)
        self._by_name = {s.name: s for s in self.sessions}
        self._offsets: dict[torch.device, torch.Tensor] = {}

    # --- description
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
        """Samples of ``split`` ("train", "val" or "test") over all sessions."""
        _check_split(split)
        return sum(int(s.bins[split].size) for s in self.sessions)

    def num_batches(self, split: str, batch_size: int) -> int:
        """Batches in one pass of :meth:`batches` over ``split``: Σ over sessions of
        ceil(samples / batch_size), since a batch never mixes sessions."""
        _check_split(split)
        return sum(-(-int(s.bins[split].size) // batch_size) for s in self.sessions)

    def sample_bins(self, name: str, split: str) -> np.ndarray:
        """(S,) int64 target bins of the samples of ``split`` in session ``name``, ascending."""
        _check_split(split)
        return self.session(name).bins[split]

    def input_shape(self, name: str) -> tuple[int, int, int, int]:
        """(C, L, H, W) of one sample's stimulus in session ``name``."""
        m = self.session(name).meta
        return (m.num_channels, self.num_lags, m.height, m.width)

    # --- placement
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
        return SessionSet(moved, self.num_lags, device_resident=self.device_resident, device=dev)

    def resident(self) -> dict[str, str]:
        """Session name -> device its data live on."""
        return {s.name: str(s.device) for s in self.sessions}

    # --- batches
    def _offset(self, device: torch.device) -> torch.Tensor:
        if device not in self._offsets:
            self._offsets[device] = torch.arange(-self.num_lags + 1, 1, device=device)
        return self._offsets[device]

    def batch(self, name: str, bins: np.ndarray | torch.Tensor | Sequence[int]) -> Batch:
        """Gather the samples whose target bins are ``bins`` from session ``name``.

        Args:
            name: the session.
            bins: (B,) target bins; each must be a sample bin (history inside one block).

        Returns:
            A :class:`Batch` on :attr:`device`: stim (B, C, L, H, W) float32 (uint8 frames
            scaled by 1/255, float frames as stored); behavior (B, L, K) or None;
            robs and dfs (B, N) float32; bins (B,) int64.
        """
        s = self.session(name)
        src = s.device
        b_np = (
            bins.detach().cpu().numpy() if isinstance(bins, torch.Tensor) else np.asarray(bins)
        ).astype(np.int64, copy=False)
        first = b_np - self.num_lags + 1
        # Negative indices would wrap around silently; a window across blocks mixes trials.
        if b_np.ndim != 1 or (b_np.size and (first.min() < 0 or b_np.max() >= s.num_bins)):
            raise ValueError(f"bins must be (B,) in [{self.num_lags - 1}, {s.num_bins})")
        if (s.blocks[first] != s.blocks[b_np]).any():
            raise ValueError("bins must be samples: their history crosses a block boundary")
        b = torch.from_numpy(b_np)  # (B,)
        if src.type == "cuda":
            # From pinned memory the copy is asynchronous: no stream sync per batch.
            b = b.pin_memory().to(src, non_blocking=True)
        idx = b[:, None] + self._offset(src)  # (B, L)
        x = s.frames[idx]  # (B, L, C, H, W), stored dtype
        x = x.to(self.device, non_blocking=True)
        x = rearrange(x, "b l c h w -> b c l h w")
        stim = x.to(torch.float32, memory_format=torch.contiguous_format)  # (B, C, L, H, W)
        # Frames are not centred: the tokens' mean-luminance term anchors each token's norm, so
        # the transformer's per-token norms keep contrast amplitude (a centred input loses it,
        # and measurably learned slower on the simulated population).
        if s.stim_scale != 1.0:
            stim.div_(s.stim_scale)
        beh = None
        if s.behavior is not None:
            beh = s.behavior[idx].to(self.device, non_blocking=True)  # (B, L, K)
        return Batch(
            session=name,
            stim=stim,
            behavior=beh,
            robs=s.robs[b].to(self.device, non_blocking=True),  # (B, N)
            dfs=s.dfs[b].to(self.device, dtype=torch.float32, non_blocking=True),  # (B, N)
            bins=b.to(self.device, non_blocking=True),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        steps: int | None = None,
    ) -> Iterator[Batch]:
        """Batches of one split; each batch holds samples of one session only.

        With ``shuffle=False`` (evaluation) the sessions come in order and each session's
        samples in ascending bin order, every sample exactly once; ``steps`` stops early after
        that many batches.

        With ``shuffle=True`` (training) each session's samples are permuted and cut into
        batches, and the batches of all sessions are shuffled together, so sessions interleave
        at random in proportion to their sample counts; everything is drawn from
        ``numpy.random.default_rng(seed)``, so the same seed gives the same batches. One pass
        covers every sample once; ``steps`` gives exactly that many batches, starting further
        passes with fresh permutations when one pass holds fewer.

        Args:
            split: "train", "val" or "test".
            batch_size: samples per batch (a session's last batch of a pass may be smaller).
            shuffle: training order (True) or evaluation order (False).
            seed: the shuffle seed (ignored when ``shuffle`` is False).
            steps: see above; None for one pass.

        Yields:
            :class:`Batch` on :attr:`device`.
        """
        _check_split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if steps is not None and steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        if not shuffle:
            done = 0
            for s in self.sessions:
                bins = s.bins[split]
                for i in range(0, bins.size, batch_size):
                    if steps is not None and done >= steps:
                        return
                    yield self.batch(s.name, bins[i : i + batch_size])
                    done += 1
            return
        if self.num_samples(split) == 0:
            return
        rng = np.random.default_rng(seed)
        done = 0
        while True:
            plan: list[tuple[str, np.ndarray]] = []
            for s in self.sessions:
                perm = rng.permutation(s.bins[split])
                plan.extend(
                    (s.name, perm[i : i + batch_size]) for i in range(0, perm.size, batch_size)
                )
            for j in rng.permutation(len(plan)):
                if steps is not None and done >= steps:
                    return
                name, bins = plan[j]
                yield self.batch(name, bins)
                done += 1
            if steps is None:
                return


def _check_split(split: str) -> None:
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r}; use one of {SPLITS}")
