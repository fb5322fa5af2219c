"""Writing small hand-made session files for the data tests.

A uniquely named module (not conftest) so `from data_helpers import ...` cannot clash with another
test folder's helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np


def session_arrays(
    *,
    t: int = 120,
    n: int = 3,
    h: int = 8,
    w: int = 8,
    c: int | None = None,
    k: int | None = 2,
    block_len: int | None = 30,
    stim_dtype: Any = np.uint8,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Arrays of a valid session: stim frame t has every pixel equal to t % 256 (uint8) or t
    (float), so a gathered window tells which bins it came from; behaviour column j is
    t + 1000 j; blocks of ``block_len`` bins (None: no blocks dataset)."""
    rng = np.random.default_rng(seed)
    shape = (t, h, w) if c is None else (t, c, h, w)
    ramp = np.arange(t)
    if np.dtype(stim_dtype) == np.uint8:
        stim = np.broadcast_to(
            (ramp % 256).astype(np.uint8).reshape(-1, *[1] * (len(shape) - 1)), shape
        )
    else:
        stim = np.broadcast_to(ramp.astype(stim_dtype).reshape(-1, *[1] * (len(shape) - 1)), shape)
    out: dict[str, np.ndarray] = {
        "stim": np.ascontiguousarray(stim),
        "robs": rng.poisson(0.5, (t, n)).astype(np.uint8),
        "dfs": (rng.random((t, n)) > 0.1).astype(np.uint8),
    }
    if k is not None:
        out["behavior"] = (ramp[:, None] + 1000.0 * np.arange(k)[None, :]).astype(np.float32)
    if block_len is not None:
        out["blocks"] = (ramp // block_len).astype(np.int32)
    return out


def write_session(
    path: Path,
    arrays: dict[str, np.ndarray] | None = None,
    *,
    frame_rate: Any = 60.0,
    attrs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``arrays`` (default :func:`session_arrays` with ``kwargs``) as a session file."""
    arrays = session_arrays(**kwargs) if arrays is None else arrays
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        if frame_rate is not None:
            f.attrs["frame_rate"] = frame_rate
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path
