"""Importing one mouse of Sensorium 2023 (a folder of per-trial ``.npy`` files) as a session file.

The layout, as the competition's zip files unpack and neuralpredictors' ``MovieFileTreeDataset``
reads it (a trial's id is its files' stem, and ``tiers.npy`` is indexed by that id)::

    MOUSE/data/videos/<id>.npy          (H, W, T) the movie shown, frame t at [..., t]
    MOUSE/data/responses/<id>.npy       (N, T) deconvolved calcium activity of N neurons
    MOUSE/data/behavior/<id>.npy        (2, T) pupil dilation, running speed
    MOUSE/data/pupil_center/<id>.npy    (2, T) pupil centre x, y
    MOUSE/meta/trials/tiers.npy         entry i: trial i's tier (train, oracle, live_test_main,
                                        live_test_bonus, final_test_main, final_test_bonus)
    MOUSE/meta/neurons/unit_ids.npy                 (N,)    optional
    MOUSE/meta/neurons/cell_motor_coordinates.npy   (N, 3)  optional

Every trial's arrays are padded with NaN to one length at their end, and the responses of the
withheld tiers (the final tests; the live tests too in some releases) are all NaN.

The mapping (``vivit-hpo data import-sensorium``; README "From Sensorium 2023"):

- **trials**: the integer file stems, in numeric order (gaps in the ids are fine), one block
  each: ``blocks`` holds the trial id. A trial whose responses are all NaN (withheld) is left
  out, and so is one whose first frame is already NaN; both are counted in the summary.
- **length**: a trial is cut at its first frame (:func:`trial_length`) at which its video, its
  responses (any neuron), its behaviour or its pupil centre holds a NaN or Inf: the padding,
  and, should a trial have a hole inside, everything after it (counted as ``cut``).
- **split**: ``train`` -> 0, ``oracle`` (the repeated clips the competition validates on) -> 1,
  ``live_test_*`` and ``final_test_*`` (when their responses are there) -> 2.
- **stim**: the video frames as ``(T, H, W)``; uint8 when every video holds whole numbers in
  0..255 (a first pass over the videos decides, stopping at the first that does not), float32
  otherwise.
- **robs**: the responses as ``(T, N)`` float32. Deconvolution leaves small negative values,
  which the contract does not allow (the Poisson loss needs y >= 0): they are set to 0 and
  counted (``negative``, ``most_negative``).
- **behavior**: ``pupil_dilation``, ``running_speed``, ``pupil_center_x``, ``pupil_center_y``
  (the last two let the shifter find the pupil position), as stored.
- **also**: ``unit_ids``, ``cell_motor_coordinates`` (when the mouse folder has them), the
  attributes ``response_kind`` = ``calcium``, ``frame_rate`` (``--frame-rate``, 30 Hz by
  default: Sensorium 2023's rate; no resampling), ``name`` and ``source_sensorium``.

Trials are read one at a time and appended to resizable datasets (a mouse is about 15 GB: never
held in memory), into a temporary file beside the output that is checked with
:func:`~vivit_hpo.data.contract.validate_file` and renamed onto it only then
(:func:`~vivit_hpo._io.atomic_path`): a failed import leaves nothing behind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vivit_hpo._io import atomic_path
from vivit_hpo.data.contract import validate_file
from vivit_hpo.errors import DataError

__all__ = [
    "BEHAVIOR_NAMES",
    "DATA_KEYS",
    "FRAME_RATE",
    "TIER_SPLIT",
    "SensoriumImport",
    "import_sensorium",
    "trial_length",
]

DATA_KEYS = ("videos", "responses", "behavior", "pupil_center")
TIER_SPLIT = {
    "train": 0,
    "oracle": 1,
    "live_test_main": 2,
    "live_test_bonus": 2,
    "final_test_main": 2,
    "final_test_bonus": 2,
}
BEHAVIOR_NAMES = ("pupil_dilation", "running_speed", "pupil_center_x", "pupil_center_y")
FRAME_RATE = 30.0
_CHUNK_BYTES = 2**18  # HDF5 chunks of the resizable datasets: a clip's frames, a few reads
_LAYOUT = (
    "pass one mouse's folder of the Sensorium 2023 layout (data/videos, data/responses, "
    "data/behavior, data/pupil_center and meta/trials/tiers.npy)"
)
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SensoriumImport:
    """What :func:`import_sensorium` wrote.

    Attributes:
        out: the session file.
        name: the session name.
        num_bins: T, bins (frames) of the kept trials.
        frame_shape: (H, W).
        stim_dtype: ``uint8`` or ``float32``.
        frame_rate: the ``frame_rate`` attribute, Hz.
        num_units: N.
        kept: trials imported, by tier.
        withheld: trials left out because all their responses are NaN, by tier.
        empty: trials left out because their first frame is already NaN.
        cut: kept trials with responses after their first NaN frame (a hole, not the padding).
        padding: frames dropped after the kept trials' first NaN frame.
        bins: bins per split (``train``, ``val``, ``test``).
        negative: responses below 0, set to 0.
        most_negative: the lowest response before that (0.0 when none was negative).
        behavior_names: the K behaviour channels.
    """

    out: Path
    name: str
    num_bins: int
    frame_shape: tuple[int, int]
    stim_dtype: str
    frame_rate: float
    num_units: int
    kept: dict[str, int]
    withheld: dict[str, int]
    empty: int
    cut: int
    padding: int
    bins: dict[str, int]
    negative: int
    most_negative: float
    behavior_names: tuple[str, ...] = BEHAVIOR_NAMES

    @property
    def num_trials(self) -> int:
        return sum(self.kept.values())


def trial_length(*arrays: np.ndarray) -> int:
    """Frames of a trial before the first one at which any array holds a NaN or Inf.

    Args:
        arrays: the trial's arrays, time on the last axis, all with the same T.

    Returns:
        The index of the first frame with a non-finite value in any array, or T.
    """
    t = int(arrays[0].shape[-1])
    for a in arrays:
        bad = np.flatnonzero(~np.isfinite(a.reshape(-1, a.shape[-1])).all(axis=0))
        if bad.size:
            t = min(t, int(bad[0]))
    return t


# ----------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class _Trial:
    id: int
    tier: str


@dataclass(frozen=True)
class _Layout:
    folder: Path
    trials: tuple[_Trial, ...]
    num_units: int
    frame_shape: tuple[int, int]
    unit_ids: np.ndarray | None
    coordinates: np.ndarray | None

    def path(self, key: str, trial: _Trial) -> Path:
        return self.folder / "data" / key / f"{trial.id}.npy"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _load(path: Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickles; a file that is no readable array is one line."""
    try:
        return np.asarray(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"{path}: not a readable .npy array of numbers ({_first_line(e)}); re-extract the "
            "mouse folder"
        ) from e


def _trial_ids(folder: Path, key: str) -> list[int]:
    """The trial ids (integer stems of ``*.npy``) of ``data/<key>``, sorted."""
    where = folder / "data" / key
    if not where.is_dir():
        raise DataError(f"{folder}: no data/{key} folder; {_LAYOUT}")
    ids: dict[int, Path] = {}
    for p in where.glob("*.npy"):
        if p.name.startswith("."):
            continue  # hidden files (macOS `._12.npy`): not trials
        if not p.stem.isdigit():
            raise DataError(
                f"{p}: not named by an integer trial id (like 12.npy); remove or rename it"
            )
        if int(p.stem) in ids:
            raise DataError(f"{p}: trial {int(p.stem)} also has {ids[int(p.stem)].name}; keep one")
        ids[int(p.stem)] = p
    return sorted(ids)


def _tiers(folder: Path, last_id: int) -> list[str]:
    path = folder / "meta" / "trials" / "tiers.npy"
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the split comes from each trial's tier (train, oracle, "
            "live_test_*), so re-extract the mouse folder with its meta/ folder"
        )
    raw = _load(path).reshape(-1)
    if raw.dtype.kind not in "US":
        raise DataError(f"{path}: holds {raw.dtype} values, not tier names; re-extract it")
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw.tolist()]
    if len(names) <= last_id:
        raise DataError(
            f"{path}: has {len(names)} entries but trial {last_id} exists; tiers.npy needs "
            "one entry per trial id (entry i is trial i's tier)"
        )
    return names


def _optional(path: Path, num_units: int) -> np.ndarray | None:
    """A per-neuron array of ``meta/neurons`` (None when absent), checked to have N rows."""
    if not path.is_file():
        return None
    x = _load(path)
    if x.ndim == 0 or x.shape[0] != num_units:
        raise DataError(
            f"{path}: has {x.shape[0] if x.ndim else 0} entries but the responses have "
            f"{num_units} neurons; re-extract the mouse folder (or remove the file)"
        )
    return x


def _scan(folder: Path) -> _Layout:
    """Check a mouse folder's layout from the arrays' headers alone (no data read)."""
    if folder.is_file() and folder.suffix == ".zip":
        raise DataError(f"{folder}: a zip file; unzip it and pass the mouse folder it holds")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; {_LAYOUT}")
    if not (folder / "data").is_dir():
        inner = sorted(p.name for p in folder.iterdir() if (p / "data").is_dir())
        if inner:
            more = f" and {len(inner) - 1} more" if len(inner) > 1 else ""
            raise DataError(
                f"{folder}: no data/ folder, but it holds mouse folders ({inner[0]}{more}); "
                "import each mouse folder into its own session file"
            )
        raise DataError(f"{folder}: no data/ folder; {_LAYOUT}")
    ids = {key: _trial_ids(folder, key) for key in DATA_KEYS}
    ref = ids["responses"]
    if not ref:
        raise DataError(f"{folder / 'data' / 'responses'}: no trial (<id>.npy) at all; {_LAYOUT}")
    for key in DATA_KEYS:
        if ids[key] != ref:
            have, lack = ("responses", key) if set(ref) - set(ids[key]) else (key, "responses")
            tid = min(set(ids[have]) - set(ids[lack]))
            raise DataError(
                f"{folder}: data/{lack} has no {tid}.npy but data/{have} has; every trial needs "
                f"a file in each of {', '.join(f'data/{k}' for k in DATA_KEYS)}"
            )
    tiers = _tiers(folder, ref[-1])
    unknown = [i for i in ref if tiers[i] not in TIER_SPLIT]
    if unknown:
        raise DataError(
            f"{folder / 'meta' / 'trials' / 'tiers.npy'}: trial {unknown[0]} has the tier "
            f"{tiers[unknown[0]]!r}, not one of {', '.join(TIER_SPLIT)}; fix the tier names"
        )
    trials = tuple(_Trial(i, tiers[i]) for i in ref)
    lay = _Layout(folder, trials, 0, (0, 0), None, None)
    first = trials[0]
    num_units, frame_shape = -1, (-1, -1)
    for trial in trials:
        shapes: dict[str, tuple[int, ...]] = {}
        for key, dims, what in (
            ("videos", 3, "(height, width, frames)"),
            ("responses", 2, "(neurons, frames)"),
            ("behavior", 2, "(2, frames): pupil dilation, running speed"),
            ("pupil_center", 2, "(2, frames): x, y"),
        ):
            path = lay.path(key, trial)
            a = _load(path, mmap=True)
            ok = a.ndim == dims and a.dtype.kind in "iuf" and (key in DATA_KEYS[:2] or len(a) == 2)
            if not ok:
                raise DataError(
                    f"{path}: {a.dtype} array of shape {a.shape}, not {what} numbers; "
                    "re-extract the trial"
                )
            shapes[key] = a.shape
        t = shapes["videos"][2]
        for key in DATA_KEYS[1:]:
            if shapes[key][-1] != t:
                raise DataError(
                    f"{folder}: trial {trial.id}: data/videos/{trial.id}.npy has {t} frames but "
                    f"data/{key}/{trial.id}.npy has {shapes[key][-1]}; a trial's arrays need one "
                    "entry per frame (re-extract the trial)"
                )
        if trial is first:
            num_units = shapes["responses"][0]
            frame_shape = (shapes["videos"][0], shapes["videos"][1])
        elif shapes["responses"][0] != num_units:
            raise DataError(
                f"{lay.path('responses', trial)}: has {shapes['responses'][0]} neurons but "
                f"trial {first.id} has {num_units}; every trial of a mouse records the same "
                "neurons (import different scans as different sessions)"
            )
        elif (shapes["videos"][0], shapes["videos"][1]) != frame_shape:
            raise DataError(
                f"{lay.path('videos', trial)}: frames of {shapes['videos'][0]}x"
                f"{shapes['videos'][1]} but trial {first.id} has {frame_shape[0]}x"
                f"{frame_shape[1]}; every trial's video needs the same frame size"
            )
    neurons = folder / "meta" / "neurons"
    return _Layout(
        folder=folder,
        trials=trials,
        num_units=int(num_units),
        frame_shape=(int(frame_shape[0]), int(frame_shape[1])),
        unit_ids=_optional(neurons / "unit_ids.npy", num_units),
        coordinates=_optional(neurons / "cell_motor_coordinates.npy", num_units),
    )


def _stim_dtype(lay: _Layout) -> np.dtype:
    """uint8 when every video's finite values are whole numbers in 0..255, else float32."""
    for trial in lay.trials:
        v = _load(lay.path("videos", trial))
        x = v[np.isfinite(v)]
        if x.size and not (x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.round(x))):
            return np.dtype(np.float32)
    return np.dtype(np.uint8)


# ----------------------------------------------------------------------------- writing


def _growing(f: h5py.File, key: str, row: tuple[int, ...], dtype: Any) -> h5py.Dataset:
    """An empty dataset of rows ``row`` that grows along its first axis."""
    row_bytes = max(1, int(np.prod(row)) * np.dtype(dtype).itemsize)
    rows = max(1, _CHUNK_BYTES // row_bytes)
    return f.create_dataset(
        key, shape=(0, *row), maxshape=(None, *row), dtype=dtype, chunks=(rows, *row)
    )


def _store(f: h5py.File, key: str, x: np.ndarray | None) -> None:
    if x is None:
        return
    if x.dtype.kind == "U":  # h5py stores text as variable-length strings, not numpy's UCS4
        f.create_dataset(key, data=x.astype(object), dtype=h5py.string_dtype())
    else:
        f.create_dataset(key, data=x)


@dataclass
class _Tally:
    kept: Counter[str]
    withheld: Counter[str]
    empty: int = 0
    cut: int = 0
    padding: int = 0
    negative: int = 0
    most_negative: float = 0.0


def _write(
    f: h5py.File,
    lay: _Layout,
    dtype: np.dtype,
    on_trial: Callable[[int, int], None] | None,
) -> tuple[_Tally, np.ndarray, np.ndarray]:
    """Append the kept trials one by one; returns the tally, blocks (T,) and split (T,)."""
    h, w = lay.frame_shape
    stim = _growing(f, "stim", (h, w), dtype)
    robs = _growing(f, "robs", (lay.num_units,), np.float32)
    beh = _growing(f, "behavior", (len(BEHAVIOR_NAMES),), np.float32)
    tally = _Tally(kept=Counter(), withheld=Counter())
    runs: list[tuple[int, int, int]] = []  # (trial id, bins, split code)
    for i, trial in enumerate(lay.trials):
        if on_trial is not None:
            on_trial(i, len(lay.trials))
        resp = _load(lay.path("responses", trial))  # (N, T)
        if np.isnan(resp).all():
            tally.withheld[trial.tier] += 1
            continue  # its video is never read
        video = _load(lay.path("videos", trial))  # (H, W, T)
        behavior = _load(lay.path("behavior", trial))  # (2, T)
        pupil = _load(lay.path("pupil_center", trial))  # (2, T)
        n = trial_length(video, resp, behavior, pupil)
        if n == 0:
            tally.empty += 1
            continue
        tally.padding += resp.shape[1] - n
        tally.cut += bool(np.isfinite(resp[:, n:]).any())
        y = np.ascontiguousarray(resp[:, :n].T, dtype=np.float32)  # (n, N)
        neg = y < 0
        if neg.any():
            tally.negative += int(np.count_nonzero(neg))
            tally.most_negative = min(tally.most_negative, float(y[neg].min()))
            y[neg] = 0.0
        t0 = stim.shape[0]
        for ds in (stim, robs, beh):
            ds.resize(t0 + n, axis=0)
        stim[t0:] = np.moveaxis(video[:, :, :n], -1, 0).astype(dtype)  # (n, H, W)
        robs[t0:] = y
        beh[t0:] = np.concatenate([behavior[:, :n], pupil[:, :n]]).T  # (n, 4)
        tally.kept[trial.tier] += 1
        runs.append((trial.id, n, TIER_SPLIT[trial.tier]))
    if on_trial is not None:
        on_trial(len(lay.trials), len(lay.trials))
    if not runs:
        left = ", ".join(f"{k} {v}" for k, v in sorted(tally.withheld.items()))
        raise DataError(
            f"{lay.folder}: no trial has responses (withheld, all NaN: {left or 'none'}; "
            f"starting with a NaN frame: {tally.empty}); import a mouse folder with recorded "
            "responses"
        )
    lengths = [n for _, n, _ in runs]
    blocks = np.repeat([tid for tid, _, _ in runs], lengths).astype(np.int64)
    split = np.repeat([code for _, _, code in runs], lengths).astype(np.uint8)
    return tally, blocks, split


def import_sensorium(
    folder: str | Path,
    out: str | Path,
    *,
    frame_rate: float = FRAME_RATE,
    name: str | None = None,
    on_trial: Callable[[int, int], None] | None = None,
) -> SensoriumImport:
    """Convert one Sensorium 2023 mouse folder into a session file (see the module docstring).

    Args:
        folder: the mouse folder (holding ``data/`` and ``meta/``).
        out: the session file to write (``*.h5``); its folder is created.
        frame_rate: the ``frame_rate`` attribute, Hz (the frames are not resampled).
        name: the session name (default: ``out``'s stem).
        on_trial: called with (trials done, trials) as the import goes (a progress bar).

    Returns:
        What was written and what was left out.

    Raises:
        DataError: the folder breaks the layout, no trial has responses, or the result breaks
            the data contract (one line that says what to do); nothing is written then.
    """
    folder, out = Path(folder), Path(out)
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise DataError(
            f"--frame-rate {frame_rate!r}: give a positive number of frames per second "
            "(Sensorium 2023 is 30 Hz)"
        )
    session = name if name is not None else out.stem
    if not session.strip():
        raise DataError("--name is empty; give the session a name")
    lay = _scan(folder)
    dtype = _stim_dtype(lay)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            tally, blocks, split = _write(f, lay, dtype, on_trial)
            f.create_dataset("blocks", data=blocks)
            f.create_dataset("split", data=split)
            _store(f, "unit_ids", lay.unit_ids)
            _store(f, "cell_motor_coordinates", lay.coordinates)
            f.attrs["behavior_names"] = list(BEHAVIOR_NAMES)
            f.attrs["response_kind"] = "calcium"
            f.attrs["frame_rate"] = float(frame_rate)
            f.attrs["name"] = session
            f.attrs["source_sensorium"] = str(folder)
        problems = [p.replace(str(tmp), str(out)) for p in validate_file(tmp)]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(problems[0] + more)
    return SensoriumImport(
        out=out,
        name=session,
        num_bins=int(blocks.shape[0]),
        frame_shape=lay.frame_shape,
        stim_dtype=str(dtype),
        frame_rate=float(frame_rate),
        num_units=lay.num_units,
        kept=dict(tally.kept),
        withheld=dict(tally.withheld),
        empty=tally.empty,
        cut=tally.cut,
        padding=tally.padding,
        bins={s: int(np.count_nonzero(split == i)) for i, s in enumerate(_SPLITS)},
        negative=tally.negative,
        most_negative=tally.most_negative,
    )
