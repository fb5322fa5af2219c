"""Helpers the NWB readers share: importing pynwb, naming objects by path, listing them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vivit_hpo.errors import DataError

__all__ = ["INSTALL", "listing", "path_of", "pick", "pynwb", "ragged", "text"]

INSTALL = "pip install 'vivit-hpo[nwb]'"
_MAX_LISTED = 12


def pynwb() -> Any:
    """The pynwb module; a one-line error naming the install command when it is missing."""
    try:
        import pynwb as module
    except ImportError as e:
        raise DataError(
            f"importing NWB files needs pynwb, which is not installed; run `{INSTALL}`"
        ) from e
    return module


def path_of(io: Any, obj: Any) -> str:
    """The object's path in the file (``stimulus/templates/movie``), else its name."""
    try:
        builder = io.manager.get_builder(obj)
    except Exception:  # a container pynwb did not read from the file: use its name
        builder = None
    path = getattr(builder, "path", None)
    return str(path).removeprefix("root/") if path else str(obj.name)


def listing(paths: Sequence[str]) -> str:
    """Up to 12 names, comma-separated, and how many more there are."""
    shown = ", ".join(paths[:_MAX_LISTED])
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return shown + more


def pick(found: dict[str, Any], name: str) -> list[str]:
    """Paths of ``found`` that ``name`` names: the object's name, its path or a path suffix."""
    return [p for p, o in found.items() if o.name == name or p == name or p.endswith("/" + name)]


def ragged(table: Any, column: str) -> list[np.ndarray]:
    """The rows of a ragged column of an hdmf table, each as an array."""
    vi = table[column]
    ends = np.asarray(vi.data[()], dtype=np.int64)
    flat = vi.target.data
    begins = np.r_[0, ends[:-1]]
    return [np.asarray(flat[a:b]) for a, b in zip(begins.tolist(), ends.tolist(), strict=True)]


def text(values: Any) -> np.ndarray:
    """(N,) object array of ``str`` from stored text (bytes or str)."""
    arr = np.asarray(values, dtype=object).reshape(-1)
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr], dtype=object)
