"""Loading a run's sessions, and describing session files without loading their stimulus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vivit_hpo.config import DataConfig
from vivit_hpo.data.contract import expand_paths, raise_problems, read_name, validate_file
from vivit_hpo.data.session import (
    SPLITS,
    SessionSet,
    load_session,
    read_split,
    sample_mask,
)
from vivit_hpo.data.stream import host_memory_budget, stim_nbytes, stream_plan
from vivit_hpo.errors import DataError

__all__ = ["FileReport", "inspect_file", "load_sessions"]


def load_sessions(
    paths: Sequence[str | Path],
    cfg: DataConfig,
    *,
    min_size: tuple[int, int] | None = None,
) -> SessionSet:
    """Validate every session file, then load them all (on the CPU).

    Args:
        paths: session files and folders of them (see
            :func:`~vivit_hpo.data.contract.expand_paths`).
        cfg: ``num_lags``, the split settings, ``device_resident`` and ``stream`` (which
            sessions' frames are read from their files batch by batch instead of into memory).
        min_size: (H, W) of one tubelet; frames smaller than that are refused.

    Returns:
        The sessions, in the order of the expanded paths; call ``.to(device)`` to place them.

    Raises:
        DataError: a file breaks the contract (the first problem, and how many more), two files
            share a session name, or a session has no training or no validation sample.
    """
    files = expand_paths(paths)
    problems: list[str] = []
    first_bad: Path | None = None
    for f in files:
        got = validate_file(f, min_size=min_size, num_lags=cfg.num_lags)
        if got and first_bad is None:
            first_bad = f
        problems.extend(got)
    raise_problems(problems, first_bad)
    budget = host_memory_budget(cfg.host_memory_gb)
    streams = stream_plan([stim_nbytes(f) for f in files], cfg.stream, budget)
    sessions = [load_session(f, cfg, stream=st) for f, st in zip(files, streams, strict=True)]
    for s in sessions:
        for split, what in (("train", "training"), ("val", "validation")):
            if s.num_samples(split, cfg.num_lags) == 0:
                raise DataError(
                    f"{s.path}: split: session {s.name!r} has no {what} samples with "
                    f"num_lags={cfg.num_lags}; mark some whole blocks as {split} in `split` (or "
                    "drop `split` for a seeded split), or use a smaller data.num_lags"
                )
    return SessionSet(sessions, cfg.num_lags, device_resident=cfg.device_resident)


@dataclass
class FileReport:
    """What ``vivit-hpo data inspect`` shows of one file; fields are None where unreadable.

    ``samples`` counts the samples of each split for the given ``num_lags``;
    ``split_source`` is "file" (a ``split`` dataset) or "seeded" (drawn by the loader).
    ``mean_rate_hz`` is the mean over units of each unit's spikes per second over its valid bins.
    """

    path: Path
    name: str | None = None
    num_bins: int | None = None
    num_units: int | None = None
    num_channels: int | None = None
    height: int | None = None
    width: int | None = None
    stim_dtype: str | None = None
    num_behavior: int | None = None
    frame_rate: float | None = None
    mean_rate_hz: float | None = None
    num_blocks: int | None = None
    split_source: str | None = None
    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def inspect_file(
    path: str | Path, cfg: DataConfig, *, min_size: tuple[int, int] | None = None
) -> FileReport:
    """Validate one file and describe it, reading everything but the stimulus frames.

    Args:
        path: a session file.
        cfg: ``num_lags`` and the split settings used to count samples.
        min_size: (H, W) of one tubelet, or None.

    Returns:
        The report; its description is filled only as far as the problems allow.
    """
    path = Path(path)
    rep = FileReport(path=path, problems=validate_file(path, min_size=min_size, num_lags=None))
    if not path.is_file() or not h5py.is_hdf5(path):
        return rep
    try:
        return _describe(path, rep, cfg)
    except OSError:  # unreadable: validate_file has said so already
        return rep


def _describe(path: Path, rep: FileReport, cfg: DataConfig) -> FileReport:
    with h5py.File(path, "r") as f:
        rep.name = read_name(f, path)
        stim = f.get("stim")
        if isinstance(stim, h5py.Dataset) and stim.ndim in (3, 4):
            rep.num_bins = int(stim.shape[0])
            rep.num_channels = 1 if stim.ndim == 3 else int(stim.shape[1])
            rep.height, rep.width = int(stim.shape[-2]), int(stim.shape[-1])
            rep.stim_dtype = str(stim.dtype)
        robs = f.get("robs")
        if isinstance(robs, h5py.Dataset) and robs.ndim == 2:
            rep.num_units = int(robs.shape[1])
        beh = f.get("behavior")
        rep.num_behavior = (
            int(beh.shape[1]) if isinstance(beh, h5py.Dataset) and beh.ndim == 2 else 0
        )
        try:
            rep.frame_rate = float(np.asarray(f.attrs["frame_rate"]).item())
        except (KeyError, ValueError, TypeError):
            rep.frame_rate = None
        prefix = f"{path}: "
        broken = {q.removeprefix(prefix).split(":")[0] for q in rep.problems}
        if broken & {"robs", "dfs", "blocks", "split", "frame_rate", "name"}:
            return rep
        # The datasets below keep the contract: counts and splits can be computed safely.
        y = np.asarray(f["robs"][()], dtype=np.float64)
        m = np.asarray(f["dfs"][()]) > 0 if "dfs" in f else np.ones(y.shape, dtype=bool)
        t = y.shape[0]
        blocks, split, rep.split_source = read_split(f, rep.name, cfg)
    n_valid = m.sum(0)
    per_unit = np.where(m, y, 0.0).sum(0) / np.maximum(n_valid, 1)
    assert rep.frame_rate is not None
    rep.mean_rate_hz = (
        float(per_unit[n_valid > 0].mean() * rep.frame_rate) if (n_valid > 0).any() else 0.0
    )
    rep.num_blocks = int(1 + np.count_nonzero(blocks[1:] != blocks[:-1])) if t else 0
    valid = sample_mask(blocks, split, cfg.num_lags)
    rep.samples = {s: int(np.count_nonzero(valid & (split == i))) for i, s in enumerate(SPLITS)}
    return rep
