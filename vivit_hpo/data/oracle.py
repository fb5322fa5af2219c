"""The oracle of a simulated data folder: the bits per spike of the true rates (the truth files)
on each split's sample bins, stored in ``oracle.json`` and recomputed for another ``num_lags``,
so that it is scored on the same bins as the models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from vivit_hpo.config import DataConfig
from vivit_hpo.data.contract import expand_paths, read_name
from vivit_hpo.data.split import SPLITS, read_split, sample_mask
from vivit_hpo.errors import DataError
from vivit_hpo.metrics import BPSAccumulator

__all__ = [
    "ORACLE_FILE",
    "TRUTH_DIR",
    "compute_oracle",
    "default_data_config",
    "oracle_bps",
    "oracle_of",
    "oracle_split_mean",
]

ORACLE_FILE = "oracle.json"
TRUTH_DIR = "truth"


def default_data_config() -> DataConfig:
    """``DataConfig()``: the split the simulator writes and the ``num_lags`` it scores with."""
    # model_validate rather than DataConfig(): mypy without the pydantic plugin does not see
    # the Field defaults.
    return DataConfig.model_validate({})


def oracle_of(
    rates: np.ndarray,
    robs: np.ndarray,
    dfs: np.ndarray,
    blocks: np.ndarray,
    split: np.ndarray,
    num_lags: int,
) -> dict[str, float]:
    """Split -> session BPS of the true rates on that split's sample bins (NaN if none)."""
    valid = sample_mask(blocks, split, num_lags)
    out: dict[str, float] = {}
    for code, s in enumerate(SPLITS):
        bins = np.flatnonzero(valid & (split == code))
        acc = BPSAccumulator(rates.shape[1])
        if bins.size:
            acc.update(
                torch.from_numpy(rates[bins]),
                torch.from_numpy(robs[bins].astype(np.float32)),
                torch.from_numpy(dfs[bins].astype(np.float32)),
            )
        out[s] = acc.result().bps
    return out


def compute_oracle(
    data_file: str | Path, truth_file: str | Path, cfg: DataConfig | None = None
) -> dict[str, float]:
    """Recompute a session's oracle BPS from its file and its truth file.

    Args:
        data_file: the session file (its ``split``, or the seeded split of ``cfg``, decides the
            bins).
        truth_file: the file with ``rates`` (T, N).
        cfg: ``num_lags`` and the split settings (default ``DataConfig()``).

    Returns:
        split -> session BPS of the true rates on that split's sample bins.
    """
    cfg = cfg or default_data_config()
    data_file = Path(data_file)
    with h5py.File(data_file, "r") as f:
        name = read_name(f, data_file)
        robs = np.asarray(f["robs"][()], dtype=np.float32)
        dfs = np.asarray(f["dfs"][()]) if "dfs" in f else np.ones(robs.shape, np.uint8)
        blocks, split, _ = read_split(f, name, cfg)
    with h5py.File(truth_file, "r") as f:
        rates = np.asarray(f["rates"][()], dtype=np.float32)
    if rates.shape != robs.shape:
        raise DataError(
            f"{truth_file}: rates: shape {rates.shape} differs from robs {robs.shape} of "
            f"{data_file}; pair each session with its own truth file"
        )
    return oracle_of(rates, robs, dfs, blocks, split, cfg.num_lags)


def oracle_bps(
    data_dir: str | Path, cfg: DataConfig | None = None
) -> dict[str, dict[str, float]] | None:
    """The oracle BPS of a simulated data folder: session -> split -> bps; None if it has none.

    Reads ``oracle.json``. When ``cfg`` is given and its ``num_lags`` differs from the one the
    file was computed with, the oracle is recomputed from the truth files for ``cfg``, so it is
    always scored on the same bins as the models.
    """
    data_dir = Path(data_dir)
    path = data_dir / ORACLE_FILE if data_dir.is_dir() else data_dir.parent / ORACLE_FILE
    if not path.is_file():
        return None
    stored: dict[str, dict[str, float]] = json.loads(path.read_text())
    if cfg is None:
        return stored
    files = expand_paths([path.parent])
    out: dict[str, dict[str, float]] = {}
    for data_file in files:
        truth = path.parent / TRUTH_DIR / data_file.name
        if not truth.is_file():
            continue
        with h5py.File(truth, "r") as f:
            lags = int(f.attrs.get("oracle_num_lags", -1))
        with h5py.File(data_file, "r") as f:
            name = read_name(f, data_file)
        if lags == cfg.num_lags and name in stored:
            out[name] = stored[name]
        else:
            out[name] = compute_oracle(data_file, truth, cfg)
    return out


def oracle_split_mean(
    paths: Sequence[str | Path], split: str = "test", cfg: DataConfig | None = None
) -> float | None:
    """The oracle BPS of ``split``, the mean over the sessions of the simulated folders that
    ``paths`` (session files or folders) lie in; None unless every folder has a readable
    ``oracle.json`` (data that are not simulated have no oracle). ``cfg`` as in
    :func:`oracle_bps`: the oracle on the bins a model with its ``num_lags`` is scored on."""
    scores: list[float] = []
    for folder in {Path(p) if Path(p).is_dir() else Path(p).parent for p in paths}:
        try:
            found = oracle_bps(folder, cfg)
        except (OSError, ValueError):
            return None
        if found is None:
            return None
        scores += [float(s[split]) for s in found.values() if isinstance(s, dict) and split in s]
    return sum(scores) / len(scores) if scores else None
