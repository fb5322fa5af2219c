"""Loading a run's sessions, and describing session files without loading their stimulus."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vivit_hpo.config import DataConfig
from vivit_hpo.data.contract import (
    RESPONSE_KINDS,
    expand_paths,
    read_frame_rate,
    read_name,
    read_response_kind,
    validate_file,
)
from vivit_hpo.data.session import SessionSet
from vivit_hpo.data.session_file import load_session
from vivit_hpo.data.split import SPLITS, read_split, sample_mask
from vivit_hpo.data.stream import host_memory_budget, stim_nbytes, stream_plan
from vivit_hpo.errors import DataError

__all__ = [
    "FRAME_RATE_TOLERANCE",
    "FileReport",
    "bad_files_message",
    "check_frame_rates",
    "inspect_file",
    "load_sessions",
]

FRAME_RATE_TOLERANCE = 0.01


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
        DataError: a file breaks the contract (every file is checked; the message gives the
            first bad file's first problem and session, and how many more problems and bad
            files there are), the sessions disagree on frame rate, two files share a session
            name, or a session has no training or no validation sample.
    """
    files = expand_paths(paths)
    bad: dict[Path, list[str]] = {}
    for f in files:
        got = validate_file(f, min_size=min_size, num_lags=cfg.num_lags)
        if got:
            bad[f] = got
    if bad:
        raise DataError(bad_files_message(bad, len(files), _inspect_target(paths, files)))
    check_frame_rates({f: _frame_rate(f) for f in files})
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
    return SessionSet(
        sessions, cfg.num_lags, device_resident=cfg.device_resident, center=cfg.center
    )


def _session_name(path: Path) -> str:
    """The session name of a file that may be unreadable (then its stem)."""
    try:
        with h5py.File(path, "r") as f:
            return read_name(f, path)
    except (OSError, ValueError):
        return path.stem


def _frame_rate(path: Path) -> float:
    with h5py.File(path, "r") as f:
        return read_frame_rate(f)


def _inspect_target(paths: Sequence[str | Path], files: Sequence[Path]) -> str:
    """What to pass to ``vivit-hpo data inspect``: the given paths (up to 3), else their folder."""
    if len(paths) <= 3:
        return " ".join(str(p) for p in paths)
    return os.path.commonpath([str(f.parent) for f in files])


def bad_files_message(bad: Mapping[Path, Sequence[str]], num_files: int, target: str) -> str:
    """One line for files that break the contract.

    Args:
        bad: each bad file and its problems (in the order the files were checked).
        num_files: how many files were checked.
        target: the paths to suggest to ``vivit-hpo data inspect``.

    Returns:
        The first bad file's first problem, with its session's name, how many more problems
        that file has and how many other files are bad, e.g. ``"<problem> (session 'b'; and 1
        more problem in this file; 1 other of 20 files is bad too; run `vivit-hpo data inspect
        DIR` for all)"``.
    """
    first, problems = next(iter(bad.items()))
    parts = [f"session {_session_name(first)!r}"]
    if len(problems) > 1:
        k = len(problems) - 1
        parts.append(f"and {k} more problem{'s' if k > 1 else ''} in this file")
    others = len(bad) - 1
    if others:
        tail = "other of" if others == 1 else "others of"
        verb = "is" if others == 1 else "are"
        parts.append(f"{others} {tail} {num_files} files {verb} bad too")
    if len(parts) > 1:
        parts.append(f"run `vivit-hpo data inspect {target}` for all")
    return f"{problems[0]} ({'; '.join(parts)})"


def check_frame_rates(
    rates: Mapping[Path, float], *, tolerance: float = FRAME_RATE_TOLERANCE
) -> None:
    """Refuse sessions of one run whose frame rates differ by more than ``tolerance``.

    A model's ``num_lags`` spans a fixed number of bins, so its temporal filters mean the same
    thing in every session only at one frame rate. The loader does not resample (counts cannot
    be re-binned without the spike times); an NWB recording can be re-imported at any rate.

    Args:
        rates: each session file and its ``frame_rate``, the first one the reference.
        tolerance: the relative difference allowed (1%: irregular frame times give rates that
            differ slightly from session to session).

    Raises:
        DataError: one line naming the first file whose rate differs from the first file's,
            and how to resample.
    """
    if not rates:
        return
    ref_path, ref = next(iter(rates.items()))
    off = [p for p, r in rates.items() if abs(r - ref) > tolerance * ref]
    if not off:
        return
    p = off[0]
    more = f" (and {len(off) - 1} more)" if len(off) > 1 else ""
    raise DataError(
        f"{p}: frame_rate: session {_session_name(p)!r} is {rates[p]:g} Hz but "
        f"{ref_path} is {ref:g} Hz{more}; a run needs one frame rate (num_lags counts bins): "
        f"re-import the recordings at one rate (`vivit-hpo data import-nwb NWB_FILE --out "
        f"SESSION.h5 --frame-rate {ref:g}`), rewrite the files at one rate, or train them in "
        "separate runs"
    )


@dataclass
class FileReport:
    """What ``vivit-hpo data inspect`` shows of one file; fields are None where unreadable.

    ``samples`` counts the samples of each split for the given ``num_lags``;
    ``split_source`` is "file" (a ``split`` dataset), "seeded" (drawn by the loader) or
    "seeded by repeat" (whole repeats drawn by the loader).
    ``mean_rate_hz`` is the mean over units of each unit's spikes (or, for calcium traces, units
    of response) per second over its valid bins; ``response_kind`` is the file's (spikes,
    calcium), None where it is unknown.
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
    response_kind: str | None = None
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
        kind = read_response_kind(f)
        rep.response_kind = kind if kind in RESPONSE_KINDS else None
        prefix = f"{path}: "
        broken = {q.removeprefix(prefix).split(":")[0] for q in rep.problems}
        if broken & {"robs", "dfs", "blocks", "split", "frame_rate", "name"}:
            return rep
        # The datasets below keep the contract: counts and splits can be computed safely.
        y = np.asarray(f["robs"][()], dtype=np.float64)
        m = np.asarray(f["dfs"][()]) > 0 if "dfs" in f else np.ones(y.shape, dtype=bool)
        t = y.shape[0]
        try:
            blocks, split, rep.split_source = read_split(f, rep.name, cfg)
        except DataError as e:  # a `repeat` the split cannot use (data.split_by)
            rep.problems.append(str(e))
            return rep
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
