"""Checking session files against the data contract (``../shared/data-contract.md``).

:func:`validate_file` reads only the metadata and, for the checks that need values (NaN,
negative counts, 0/1 masks, split labels), streams each dataset in slabs of a few MiB, so a large
file is never held in memory twice. Each problem is one line::

    <file>: <dataset>: <what is wrong>; <how to fix>
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vivit_hpo.errors import DataError

__all__ = [
    "RESPONSE_KINDS",
    "STIM_DTYPES",
    "expand_paths",
    "raise_problems",
    "read_frame_rate",
    "read_name",
    "read_response_kind",
    "validate_file",
]

STIM_DTYPES = (np.dtype(np.uint8), np.dtype(np.float16), np.dtype(np.float32))
# What `robs` holds: spike counts (scored in bits per spike), or calcium traces (dF/F or
# deconvolved), scored by the same Poisson formula but led by the correlation.
RESPONSE_KINDS = ("spikes", "calcium")
_SLAB_BYTES = 32 * 2**20


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Turn files and folders into a list of session files.

    A folder stands for its ``*.h5`` files (sorted, not recursive); a file is taken as given
    (whatever its suffix, so that :func:`validate_file` can say what is wrong with it).

    Raises:
        DataError: a path does not exist, a folder has no ``*.h5`` file, or nothing was given.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.glob("*.h5") if q.is_file())
            if not found:
                raise DataError(
                    f"{p}: folder has no *.h5 session files; pass a folder of session files "
                    "or the files themselves (make some with `vivit-hpo data synth DIR`)"
                )
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder; pass a session file (*.h5) or a folder")
    if not out:
        raise DataError("no session files given; pass --data FILE_OR_FOLDER")
    return out


def raise_problems(problems: Sequence[str], first_path: str | Path | None = None) -> None:
    """Raise one :class:`DataError` for a list of problem lines (nothing if it is empty).

    The message is the first line plus ``" (and N more; run `vivit-hpo data inspect PATH` for
    all)"`` when there are several.
    """
    if not problems:
        return
    more = ""
    if len(problems) > 1:
        where = first_path if first_path is not None else "PATH"
        more = f" (and {len(problems) - 1} more; run `vivit-hpo data inspect {where}` for all)"
    raise DataError(problems[0] + more)


def read_name(f: h5py.File, path: Path) -> str:
    """The session name: the ``name`` attribute, else the file's stem."""
    name = f.attrs.get("name")
    if name is None:
        return path.stem
    if isinstance(name, bytes):
        name = name.decode()
    if isinstance(name, np.ndarray) and name.shape == ():
        name = name.item()
        if isinstance(name, bytes):
            name = name.decode()
    return str(name)


def _attr_text(raw: Any) -> Any:
    """A string attribute as ``str`` (h5py gives bytes or a 0-d array for some writers)."""
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    return raw.decode() if isinstance(raw, bytes) else raw


def read_response_kind(f: h5py.File) -> str:
    """The ``response_kind`` attribute of an open, valid session file: ``spikes`` (the default
    when absent) or ``calcium``."""
    raw = f.attrs.get("response_kind")
    return "spikes" if raw is None else str(_attr_text(raw))


def read_frame_rate(f: h5py.File) -> float:
    """The ``frame_rate`` attribute of an open, valid session file, in bins per second."""
    return float(np.asarray(f.attrs["frame_rate"]).item())


def _slabs(ds: h5py.Dataset) -> Iterator[np.ndarray]:
    """Yield ``ds`` in slabs along its first axis, aligned to its chunks, about 32 MiB each."""
    t = ds.shape[0]
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    rows = max(1, _SLAB_BYTES // row_bytes)
    if ds.chunks is not None:
        c = ds.chunks[0]
        rows = max(c, rows // c * c)
    for i in range(0, t, rows):
        yield ds[i : i + rows]


def _count(ds: h5py.Dataset, bad: Callable[[np.ndarray], np.ndarray]) -> int:
    """How many elements of ``ds`` satisfy ``bad``, streamed slab by slab."""
    return sum(int(np.count_nonzero(bad(x))) for x in _slabs(ds))


def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf"


def _not_01(x: np.ndarray) -> np.ndarray:
    return (x != 0) & (x != 1)


def _bad_split(x: np.ndarray) -> np.ndarray:
    return (x < 0) | (x > 2)


def validate_file(
    path: str | Path,
    *,
    min_size: tuple[int, int] | None = None,
    num_lags: int | None = None,
) -> list[str]:
    """Check one session file against the data contract.

    Args:
        path: the session file.
        min_size: (H, W) the smallest frame the model can take (one tubelet); None: no check.
        num_lags: L; when given, a file none of whose blocks holds L bins (so no sample) is a
            problem.

    Returns:
        One line per problem, ``"<file>: <dataset>: <what is wrong>; <how to fix>"``; empty if
        the file keeps the contract.
    """
    path = Path(path)
    if not path.exists():
        return [f"{path}: file: does not exist; pass the path of a session file (*.h5)"]
    if not path.is_file():
        return [f"{path}: file: is not a file; pass a session file (*.h5) or a folder of them"]
    if not h5py.is_hdf5(path):
        return [
            f"{path}: file: not an HDF5 file; write sessions with h5py as described in "
            "data-contract.md"
        ]
    try:
        with h5py.File(path, "r") as f:
            return _validate_open(f, path, min_size=min_size, num_lags=num_lags)
    except OSError as e:
        return [f"{path}: file: cannot be read ({e}); check that it is a complete HDF5 file"]


def _dataset(f: h5py.File, key: str, path: Path, problems: list[str]) -> h5py.Dataset | None:
    obj: Any = f.get(key)
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset):
        problems.append(f"{path}: {key}: is a group, not a dataset; store `{key}` as an array")
        return None
    return obj


def _validate_open(
    f: h5py.File, path: Path, *, min_size: tuple[int, int] | None, num_lags: int | None
) -> list[str]:
    p: list[str] = []

    # --- attributes
    if "frame_rate" not in f.attrs:
        p.append(
            f"{path}: frame_rate: missing file attribute; set f.attrs['frame_rate'] = <bins per "
            "second> (e.g. 120.0)"
        )
    else:
        fr = np.asarray(f.attrs["frame_rate"])
        ok = fr.size == 1 and _is_numeric(fr.dtype) and np.isfinite(fr).all() and fr.item() > 0
        if not ok:
            p.append(
                f"{path}: frame_rate: attribute is {fr.tolist()!r}, not a positive number; set "
                "f.attrs['frame_rate'] to the bins per second (e.g. 120.0)"
            )
    name = f.attrs.get("name")
    if name is not None:
        text = read_name(f, path)
        if not text.strip():
            p.append(f"{path}: name: attribute is empty; remove it or set a session name")
        elif bad := [c for c in ("/", "\0") if c in text]:
            # The name is the file name of the session's outputs (evaluate's <session>.npz).
            fixed = text.replace("/", "-").replace("\0", "")
            p.append(
                f"{path}: name: attribute {text!r} contains {bad[0]!r}; set a session name "
                f"without it (e.g. {fixed!r}), or remove the attribute to use the file's stem"
            )
    kind = _attr_text(f.attrs.get("response_kind", "spikes"))
    if isinstance(kind, np.ndarray):
        kind = kind.tolist()
    if not isinstance(kind, str) or kind not in RESPONSE_KINDS:
        p.append(
            f"{path}: response_kind: attribute is {kind!r}, not one of "
            f"{', '.join(RESPONSE_KINDS)}; set it to 'spikes' (counts) or 'calcium' (dF/F or "
            "deconvolved traces), or drop it (spikes)"
        )

    # --- stim
    t: int | None = None
    stim = _dataset(f, "stim", path, p)
    if stim is None and "stim" not in f:
        p.append(
            f"{path}: stim: missing; write the stimulus as dataset `stim` of shape (T, H, W) or "
            "(T, C, H, W)"
        )
    elif stim is not None:
        if stim.ndim not in (3, 4):
            p.append(
                f"{path}: stim: has shape {stim.shape} ({stim.ndim} dims); store (T, H, W) or "
                "(T, C, H, W)"
            )
        elif stim.dtype not in STIM_DTYPES:
            p.append(
                f"{path}: stim: dtype {stim.dtype} is not supported; store uint8 (0..255), "
                "float16 or float32"
            )
        else:
            t = int(stim.shape[0])
            h, w = int(stim.shape[-2]), int(stim.shape[-1])
            if t == 0:
                p.append(f"{path}: stim: has 0 frames; a session needs at least one block of bins")
            if stim.ndim == 4 and stim.shape[1] == 0:
                p.append(f"{path}: stim: has 0 channels; store (T, H, W) or (T, C, H, W), C >= 1")
            if min_size is not None and (h < min_size[0] or w < min_size[1]):
                p.append(
                    f"{path}: stim: frames of {h}x{w} are smaller than one tubelet "
                    f"({min_size[0]}x{min_size[1]}); use a smaller model.core.kernel_size or "
                    "larger frames"
                )
            if stim.dtype.kind == "f" and t > 0:
                n_bad = _count(stim, lambda x: ~np.isfinite(x))
                if n_bad:
                    p.append(
                        f"{path}: stim: {n_bad} values are NaN or Inf; replace them (e.g. with "
                        "the mean grey level) before training"
                    )

    # --- robs
    robs = _dataset(f, "robs", path, p)
    n_units: int | None = None
    if robs is None and "robs" not in f:
        p.append(f"{path}: robs: missing; write spike counts as dataset `robs` of shape (T, N)")
    elif robs is not None:
        if robs.ndim != 2:
            p.append(f"{path}: robs: has shape {robs.shape}; store spike counts as (T, N)")
        elif not _is_numeric(robs.dtype):
            p.append(
                f"{path}: robs: dtype {robs.dtype} is not numeric; store counts as integers or "
                "floats"
            )
        else:
            n_units = int(robs.shape[1])
            if n_units == 0:
                p.append(f"{path}: robs: has 0 units; a session needs at least one unit")
            if t is not None and robs.shape[0] != t:
                p.append(
                    f"{path}: robs: has {robs.shape[0]} bins but stim has {t}; both must have "
                    "one row per time bin"
                )
            if robs.shape[0] and n_units:
                if robs.dtype.kind == "f":
                    n_nan = _count(robs, lambda x: ~np.isfinite(x))
                    if n_nan:
                        p.append(
                            f"{path}: robs: {n_nan} counts are NaN or Inf; set them to 0 and mark "
                            "those bins invalid in `dfs`"
                        )
                if robs.dtype.kind in "if":
                    n_neg = _count(robs, lambda x: x < 0)
                    if n_neg:
                        p.append(
                            f"{path}: robs: {n_neg} counts are negative; spike counts must be "
                            ">= 0 (mark bad bins in `dfs` instead)"
                        )

    t_ref = t if t is not None else (int(robs.shape[0]) if robs is not None and robs.ndim else None)

    # --- dfs
    dfs = _dataset(f, "dfs", path, p)
    if dfs is not None:
        # Compare with the shape robs should have (T of stim), so that a short robs is one
        # problem, not two.
        want = (t_ref, n_units) if t_ref is not None and n_units is not None else None
        if want is not None and dfs.shape != want:
            p.append(
                f"{path}: dfs: has shape {dfs.shape}, not (T, N) = {want}; store one 0/1 flag "
                "per count, or drop `dfs` (all valid)"
            )
        elif dfs.dtype.kind not in "biuf":
            p.append(f"{path}: dfs: dtype {dfs.dtype} is not bool or numeric; store 0/1 flags")
        elif dfs.dtype.kind != "b" and dfs.size:
            n_bad = _count(dfs, _not_01)
            if n_bad:
                p.append(
                    f"{path}: dfs: {n_bad} values are not 0 or 1; store 1 where a count is "
                    "valid and 0 where it is not"
                )

    # --- behavior
    beh = _dataset(f, "behavior", path, p)
    if beh is not None:
        if beh.ndim != 2:
            p.append(
                f"{path}: behavior: has shape {beh.shape}; store behaviour as (T, K), one column "
                "per covariate"
            )
        elif not _is_numeric(beh.dtype):
            p.append(f"{path}: behavior: dtype {beh.dtype} is not numeric; store floats")
        else:
            if t_ref is not None and beh.shape[0] != t_ref:
                p.append(
                    f"{path}: behavior: has {beh.shape[0]} bins but stim has {t_ref}; store one "
                    "row per time bin"
                )
            if beh.shape[1] == 0:
                p.append(f"{path}: behavior: has 0 columns; drop the dataset or add covariates")
            elif beh.shape[0] and beh.dtype.kind == "f":
                n_bad = _count(beh, lambda x: ~np.isfinite(x))
                if n_bad:
                    p.append(
                        f"{path}: behavior: {n_bad} values are NaN or Inf; interpolate or fill "
                        "them (e.g. with 0 after z-scoring)"
                    )
            names = f.attrs.get("behavior_names")
            if names is not None and np.asarray(names).size != beh.shape[1]:
                p.append(
                    f"{path}: behavior_names: attribute has {np.asarray(names).size} names but "
                    f"behavior has {beh.shape[1]} columns; give one name per column"
                )
    elif "behavior_names" in f.attrs and "behavior" not in f:
        p.append(
            f"{path}: behavior_names: attribute is set but there is no `behavior` dataset; "
            "drop the attribute or add the dataset"
        )

    # --- blocks and split
    blocks_arr: np.ndarray | None = None
    for key in ("blocks", "split"):
        ds = _dataset(f, key, path, p)
        if ds is None:
            continue
        if ds.ndim != 1 or (t_ref is not None and ds.shape[0] != t_ref):
            p.append(
                f"{path}: {key}: has shape {ds.shape} but stim has {t_ref} bins; store one "
                f"integer per bin, shape ({t_ref},)"
            )
            continue
        if ds.dtype.kind not in "iu":
            p.append(f"{path}: {key}: dtype {ds.dtype} is not an integer type; store integers")
            continue
        if key == "blocks":
            blocks_arr = ds[()]
        elif ds.size:
            n_bad = _count(ds, _bad_split)
            if n_bad:
                p.append(
                    f"{path}: split: {n_bad} values are not 0, 1 or 2; use 0 train, 1 validation, "
                    "2 test (or drop `split` for a seeded split)"
                )

    if num_lags is not None and t_ref and not p:
        blocks = blocks_arr if blocks_arr is not None else np.zeros(t_ref, dtype=np.int64)
        longest = _longest_run(blocks)
        if longest < num_lags:
            p.append(
                f"{path}: blocks: the longest block has {longest} bins, fewer than num_lags="
                f"{num_lags}, so the file has no samples; use a smaller data.num_lags or longer "
                "blocks"
            )
    return p


def _longest_run(blocks: np.ndarray) -> int:
    """Length of the longest run of equal consecutive values."""
    if blocks.size == 0:
        return 0
    edges = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
    bounds = np.concatenate([[0], edges, [blocks.size]])
    return int(np.diff(bounds).max())
