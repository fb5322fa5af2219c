"""The Units table of an NWB file as ``robs`` and ``dfs``: selection, counts, validity.

- Selection (:mod:`vivit_hpo.data.units`): ``--unit-filter EXPR`` over the columns with one
  value per unit, ``--allen-qc`` (AllenSDK's defaults), ``--region NAME`` (the unit's location:
  the ``location`` of the electrode its ``peak_channel_id`` names, as in Allen files, else of
  the first electrode of its ``electrodes`` row). The kept units' ids are written as
  ``unit_ids``.
- ``robs``: each kept unit's ``spike_times`` counted into the bins, ``[start, stop)``.
- ``dfs``: 1 where the unit's ``obs_intervals`` cover the bin (all but 1% of it; all 1 without
  ``obs_intervals``), and 0 in every bin that overlaps an ``invalid_times`` interval that
  applies to the unit (:func:`~vivit_hpo.data.units.invalid_scope`: by the interval's tags, the
  unit's probe from its electrode's ``group_name`` / ``probe_id``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivit_hpo.data.binning import FrameBins, count_dtype, count_spikes, observed, overlapping
from vivit_hpo.data.nwb_common import ragged, text
from vivit_hpo.data.units import UnitFilter, allen_qc, invalid_scope, region_mask
from vivit_hpo.errors import DataError

__all__ = ["UnitSelection", "Units", "describe_selection", "read_units"]


@dataclass(frozen=True)
class UnitSelection:
    """Which units to keep: ``--unit-filter``, ``--allen-qc``, ``--region`` (all optional)."""

    unit_filter: str | None = None
    allen_qc: bool = False
    regions: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"--unit-filter {self.unit_filter!r}"] if self.unit_filter else []
        parts += ["--allen-qc"] if self.allen_qc else []
        parts += [f"--region {' '.join(self.regions)}"] if self.regions else []
        return ", ".join(parts) or "all"


@dataclass(frozen=True)
class Units:
    """What the Units table gives a session.

    Attributes:
        robs: (T, N) counts of the kept units (the narrowest unsigned dtype that holds them).
        dfs: (T, N) uint8 validity.
        ids: (N,) the kept units' ids.
        in_file: how many units the table has.
        invalid_intervals: how many ``invalid_times`` intervals touched the bins.
    """

    robs: np.ndarray
    dfs: np.ndarray
    ids: np.ndarray
    in_file: int
    invalid_intervals: int


def _scalar_columns(units: Any) -> dict[str, Any]:
    """The table's columns with one value per unit (not ragged, not references)."""
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    out: dict[str, Any] = {}
    for name in units.colnames:
        col = units[name]
        if isinstance(col, VectorIndex | DynamicTableRegion):
            continue
        shape = getattr(col.data, "shape", None)
        if shape is not None and len(shape) == 1:
            out[name] = col
    return out


def _read(col: Any) -> np.ndarray:
    x = np.asarray(col.data[()])
    return text(x) if x.dtype.kind in "OSU" else x


class _LazyColumns(Mapping[str, np.ndarray]):
    """Column name -> values, each read from the file when first asked for."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self._columns = columns
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            self._read[name] = _read(self._columns[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _electrode_rows(nwb: Any, units: Any, src: Path) -> tuple[np.ndarray, str] | None:
    """Each unit's electrode row (its peak channel's, else its first electrode's), and how."""
    elec = nwb.electrodes
    if elec is None or len(elec) == 0:
        return None
    if "peak_channel_id" in units.colnames:
        ids = np.asarray(elec.id[()])
        lookup = {int(i): r for r, i in enumerate(ids.tolist())}
        peak = np.asarray(units["peak_channel_id"].data[()]).astype(np.int64)
        rows = np.array([lookup.get(int(p), -1) for p in peak.tolist()], dtype=np.int64)
        return rows, "the electrodes named by the Units table's peak_channel_id"
    if "electrodes" in units.colnames:
        per_unit = ragged(units, "electrodes")
        rows = np.array([int(r[0]) if r.size else -1 for r in per_unit], dtype=np.int64)
        return rows, "the first electrode of each unit's electrodes"
    return None


def _electrode_column(nwb: Any, rows: np.ndarray, column: str) -> np.ndarray:
    elec = nwb.electrodes
    if column not in elec.colnames:
        return np.full(rows.shape[0], "", dtype=object)
    values = _read(elec[column])
    out = np.full(rows.shape[0], "", dtype=object)
    ok = rows >= 0
    out[ok] = [str(v) for v in values[rows[ok]]]
    return out


def _selected(nwb: Any, units: Any, sel: UnitSelection, src: Path) -> np.ndarray:
    """(N,) bool: the units ``sel`` keeps."""
    n = len(units)
    keep = np.ones(n, dtype=bool)
    columns = _scalar_columns(units)
    filters = [UnitFilter.parse(sel.unit_filter)] if sel.unit_filter else []
    if sel.allen_qc:
        filters.append(allen_qc(sorted(columns)))
    values = _LazyColumns(columns)  # only the columns a filter names are read
    for flt in filters:
        try:
            keep &= flt.evaluate(values, n)
        except DataError as e:
            raise DataError(f"{src}: {e}") from e
    if sel.regions:
        found = _electrode_rows(nwb, units, src)
        if found is None:
            raise DataError(
                f"{src}: --region: the Units table has neither peak_channel_id nor electrodes "
                "(or the file has no electrodes table), so no unit has a location; leave out "
                "--region"
            )
        rows, how = found
        try:
            keep &= region_mask(_electrode_column(nwb, rows, "location"), sel.regions, how)
        except DataError as e:
            raise DataError(f"{src}: {e}") from e
    if not keep.any():
        raise DataError(
            f"{src}: units: {sel.describe()} keeps none of the {n} units; loosen the selection"
        )
    return keep


def _unit_probes(nwb: Any, units: Any, src: Path) -> list[frozenset[str]]:
    n = len(units)
    found = _electrode_rows(nwb, units, src)
    if found is None:
        return [frozenset()] * n
    rows, _ = found
    names = _electrode_column(nwb, rows, "group_name")
    ids = _electrode_column(nwb, rows, "probe_id")
    return [frozenset(x for x in (str(a), str(b)) if x) for a, b in zip(names, ids, strict=True)]


def _invalid(
    nwb: Any, units: Any, keep: np.ndarray, bins: FrameBins, src: Path
) -> tuple[np.ndarray, int]:
    """(T, N) bool: bins made invalid by ``invalid_times``, and how many intervals touched."""
    table = nwb.invalid_times
    mask = np.zeros((len(bins), int(keep.sum())), dtype=bool)
    if table is None or len(table) == 0:
        return mask, 0
    a = np.asarray(table["start_time"].data[()], dtype=np.float64)
    b = np.asarray(table["stop_time"].data[()], dtype=np.float64)
    tags = [text(t).tolist() for t in ragged(table, "tags")] if "tags" in table.colnames else []
    probes = [p for p, k in zip(_unit_probes(nwb, units, src), keep, strict=True) if k]
    touched = 0
    for i in range(a.shape[0]):
        hit = overlapping(np.array([[a[i], b[i]]]), bins)
        who = invalid_scope(tags[i] if tags else [], probes)
        if hit.any() and who.any():
            touched += 1
            mask |= hit[:, None] & who[None, :]
    return mask, touched


def read_units(
    nwb: Any, bins: FrameBins, src: Path, selection: UnitSelection | None = None
) -> Units:
    """robs, dfs and ids of the selected units (see the module docstring).

    Raises:
        DataError: no Units table or spike times, a bad selection, or no spike in the bins.
    """
    sel = selection or UnitSelection()
    units = nwb.units
    if units is None or len(units) == 0:
        raise DataError(
            f"{src}: no Units table (or an empty one); import-nwb needs spike-sorted units "
            "(nwbfile.units with spike_times)"
        )
    if "spike_times" not in units.colnames:
        raise DataError(
            f"{src}: units: the Units table has no spike_times column (it has "
            f"{', '.join(units.colnames) or 'none'}); add each unit's spike times"
        )
    keep = _selected(nwb, units, sel, src)
    index = np.flatnonzero(keep)
    spikes_all = ragged(units, "spike_times")
    spikes = [spikes_all[j] for j in index.tolist()]
    obs = None
    if "obs_intervals" in units.colnames:
        obs_all = ragged(units, "obs_intervals")
        obs = [obs_all[j] for j in index.tolist()]
    t, n = len(bins), len(spikes)
    # Counts go straight into the narrowest dtype that holds them (uint8 unless a bin is long).
    robs = np.zeros((t, n), dtype=np.uint8)
    total = 0
    for j, sp in enumerate(spikes):
        c = count_spikes(sp, bins)
        top = int(c.max()) if c.size else 0
        if top > np.iinfo(robs.dtype).max:
            robs = robs.astype(count_dtype(top))
        robs[:, j] = c
        total += int(c.sum())
    if total == 0:
        every = np.concatenate(spikes) if n else np.zeros(0)
        span = (
            f"their spikes run from {every.min():.3f} s to {every.max():.3f} s"
            if every.size
            else "they have no spikes at all"
        )
        raise DataError(
            f"{src}: units: no spike of the {n} units falls in the stimulus' bins "
            f"({bins.start[0]:.3f} s to {bins.stop[-1]:.3f} s); {span}: check that the units "
            "and the stimulus share one clock, or pick the stimulus shown while they were "
            "recorded"
        )
    dfs = np.ones((t, n), dtype=np.uint8)
    if obs is not None:
        for j, iv in enumerate(obs):
            dfs[:, j] = observed(iv, bins)
    invalid, touched = _invalid(nwb, units, keep, bins, src)
    dfs[invalid] = 0
    return Units(
        robs=robs,
        dfs=dfs,
        ids=np.asarray(units.id[()])[index],
        in_file=len(units),
        invalid_intervals=touched,
    )


def describe_selection(sel: UnitSelection | None, kept: int, in_file: int) -> str:
    """``40 of 60 (--allen-qc)`` for the import summary."""
    how = (sel or UnitSelection()).describe()
    return f"{kept} of {in_file}" + ("" if how == "all" else f" ({how})")
