"""Writing small Sensorium 2023 mouse folders with numpy, in the layout the competition ships.

A uniquely named module (not conftest) so `from sensorium_helpers import ...` cannot clash with
another test folder's helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WITHHELD = ("final_test_main", "final_test_bonus")


@dataclass
class Mouse:
    """A written mouse folder and the arrays in it (``videos[id]`` is (H, W, T), NaN-padded)."""

    folder: Path
    ids: list[int]
    tiers: dict[int, str]
    lengths: dict[int, int]  # real frames of each trial before its NaN padding
    videos: dict[int, np.ndarray] = field(default_factory=dict)
    responses: dict[int, np.ndarray] = field(default_factory=dict)
    behavior: dict[int, np.ndarray] = field(default_factory=dict)
    pupil_center: dict[int, np.ndarray] = field(default_factory=dict)
    unit_ids: np.ndarray | None = None
    coordinates: np.ndarray | None = None


def write_mouse(
    folder: Path,
    tiers: list[str],
    *,
    n: int = 5,
    h: int = 8,
    w: int = 12,
    t: int = 40,
    min_len: int = 24,
    whole_frames: bool = True,
    seed: int = 0,
) -> Mouse:
    """Write one mouse: a trial per entry of ``tiers``, with random non-contiguous ids.

    Each trial is padded with NaN to ``t`` frames after a random length in ``[min_len, t)``;
    the responses of the final-test tiers are all NaN (withheld), others are gamma-distributed
    with a few small negative values (deconvolution noise). Videos hold whole numbers 0..255
    stored as float64 (``whole_frames``) or uniform floats.
    """
    rng = np.random.default_rng(seed)
    # Ids spread over several decades, so that the numeric order differs from the text order.
    ids = sorted(
        int(x)
        for x in rng.choice(np.r_[np.arange(3, 12), 40, 97, 123, 1000], len(tiers), replace=False)
    )
    m = Mouse(folder=folder, ids=ids, tiers=dict(zip(ids, tiers, strict=True)), lengths={})
    data = folder / "data"
    for key in ("videos", "responses", "behavior", "pupil_center"):
        (data / key).mkdir(parents=True, exist_ok=True)
    for tid in ids:
        n_real = int(rng.integers(min_len, t))
        m.lengths[tid] = n_real
        pad = np.arange(t) >= n_real
        if whole_frames:
            video = rng.integers(0, 256, (h, w, t)).astype(np.float64)
        else:
            video = rng.random((h, w, t)) * 255.0
        video[..., pad] = np.nan
        resp = rng.gamma(0.5, 1.0, (n, t)).astype(np.float32)
        resp[rng.random((n, t)) < 0.02] = -0.01
        resp[:, pad] = np.nan
        if m.tiers[tid] in WITHHELD:
            resp[:] = np.nan
        beh = np.stack([rng.normal(5.0, 1.0, t), np.abs(rng.normal(0.0, 3.0, t))])
        pupil = rng.normal(0.0, 2.0, (2, t)) + np.array([[30.0], [20.0]])
        beh[:, pad] = np.nan
        pupil[:, pad] = np.nan
        for key, arr, store in (
            ("videos", video, m.videos),
            ("responses", resp, m.responses),
            ("behavior", beh, m.behavior),
            ("pupil_center", pupil, m.pupil_center),
        ):
            np.save(data / key / f"{tid}.npy", arr)
            store[tid] = arr
    # tiers.npy is indexed by trial id: ids without files get a tier of their own.
    all_tiers = np.array(["train"] * (ids[-1] + 3), dtype="<U16")
    for tid in ids:
        all_tiers[tid] = m.tiers[tid]
    (folder / "meta" / "trials").mkdir(parents=True, exist_ok=True)
    np.save(folder / "meta" / "trials" / "tiers.npy", all_tiers)
    (folder / "meta" / "neurons").mkdir(parents=True, exist_ok=True)
    m.unit_ids = np.arange(n, dtype=np.int64) * 3 + 1
    m.coordinates = rng.normal(0.0, 100.0, (n, 3))
    np.save(folder / "meta" / "neurons" / "unit_ids.npy", m.unit_ids)
    np.save(folder / "meta" / "neurons" / "cell_motor_coordinates.npy", m.coordinates)
    return m
