"""Split units made of a movie's repeats (``data.split_by``).

A session imported from presentation tables (``import-nwb --presentations``) stores the repeat
of each bin (``repeat``: 0, 1, ... in time order; see :mod:`vivit_hpo.data.presentations`). A
repeat shows the same frames as the others, so a split that cuts time into chunks would train on
part of a repeat and validate on the rest of it; with ``split_by`` ``repeats`` (or ``auto`` and
at least :data:`MIN_REPEATS` repeats) the seeded split assigns whole repeats instead, so that no
bin of a validation or test repeat is trained on.
"""

from __future__ import annotations

import h5py
import numpy as np

from vivit_hpo.config import DataConfig
from vivit_hpo.errors import DataError

__all__ = ["MIN_REPEATS", "repeat_units"]

# Repeats that give a train, a validation and a test repeat: fewer and `auto` cuts chunks.
MIN_REPEATS = 3


def repeat_units(f: h5py.File, cfg: DataConfig) -> np.ndarray | None:
    """(T,) int64 dense repeat id of each bin, the units a seeded split assigns whole; None
    where the split cuts blocks or chunks of time instead (``split_by`` ``chunks``, or ``auto``
    and fewer than :data:`MIN_REPEATS` repeats or no ``repeat`` dataset).

    Raises:
        DataError: ``split_by`` is ``repeats`` and the file has no usable ``repeat`` (one line
            naming the file and what to do).
    """
    if cfg.split_by == "chunks":
        return None
    where = f"{f.filename}: repeat"
    if "repeat" not in f:
        if cfg.split_by == "repeats":
            raise DataError(
                f"{where}: data.split_by=repeats but the file has no `repeat` dataset; import "
                "it with `data import-nwb --presentations`, or set data.split_by=chunks"
            )
        return None
    t = int(f["robs"].shape[0])
    rep = np.asarray(f["repeat"][()])
    if rep.shape != (t,) or not np.issubdtype(rep.dtype, np.integer):
        raise DataError(
            f"{where}: expected ({t},) integers (one repeat id per bin), got {rep.shape} "
            f"{rep.dtype}; rewrite it or set data.split_by=chunks"
        )
    _, units = np.unique(rep, return_inverse=True)
    units = units.astype(np.int64).reshape(t)
    n = int(units.max()) + 1 if t else 0
    need = MIN_REPEATS if cfg.split_by == "auto" else 2
    if n < need:
        if cfg.split_by == "auto":
            return None
        raise DataError(
            f"{where}: data.split_by=repeats needs at least 2 repeats to hold one out, the file "
            f"has {n}; set data.split_by=chunks"
        )
    return units
