"""Presentation tables and movie templates from an NWB file (the pynwb side of presentations).

- ``--presentations TABLE``: a TimeIntervals table by name or path (``intervals/...``), or the
  stimulus name it is named after (``natural_movie_one`` for
  ``natural_movie_one_presentations``). Its frame column is ``frame`` (Allen Visual Coding),
  else ``Image`` (OpenScope), else ``image_index``; ``stimulus_block`` when present.
- ``--template NAME|FILE.npy``: an ImageSeries of the file (``stimulus/templates/...``), or a
  ``.npy`` of ``(frames, H, W)`` or ``(frames, H, W, C<=4)`` (memory-mapped, never read whole;
  Visual Coding Neuropixels files keep no template: AllenSDK's
  ``EcephysProjectCache.get_natural_movie_template`` gives one to ``numpy.save``). One
  ``--template`` serves every table, or give one per table in order; without it each table takes
  the template in ``stimulus/templates`` it is named after (``natural_movie_one`` for
  ``natural_movie_one_shuffled_presentations``), else the file's only template.
- Grey rows (frame -1 or NaN) show a uniform frame at the middle of the templates' pixel range
  (``(min + max) / 2``, rounded down for integer frames: 127 for a 0..255 movie).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vivit_hpo.data.frames import Frames, FrameStack
from vivit_hpo.data.nwb_common import listing, path_of, pick, pynwb
from vivit_hpo.data.presentations import GREY, PresentationTable
from vivit_hpo.errors import DataError

__all__ = [
    "FRAME_COLUMNS",
    "Presentations",
    "frame_column",
    "presentation_tables",
    "read_presentations",
    "tables_showing",
]

FRAME_COLUMNS = ("frame", "Image", "image_index")
_SUFFIX = "_presentations"


def frame_column(table: Any) -> str | None:
    """The table's frame column, or None when it has none."""
    return next((c for c in FRAME_COLUMNS if c in table.colnames), None)


def presentation_tables(nwb: Any, io: Any) -> dict[str, Any]:
    """The file's TimeIntervals tables with a frame column, by path."""
    nw = pynwb()
    return {
        path_of(io, o): o
        for o in nwb.objects.values()
        if isinstance(o, nw.epoch.TimeIntervals) and frame_column(o) is not None
    }


def _stem(name: str) -> str:
    return name.removesuffix(_SUFFIX)


def _shows(table_name: str, template_name: str) -> bool:
    """Whether a table is named after a template (``natural_movie_one_shuffled_presentations``
    after ``natural_movie_one``; OpenScope names both ``X_presentations``)."""
    t, m = _stem(table_name), _stem(template_name)
    return t == m or t.startswith(m + "_")


def tables_showing(nwb: Any, io: Any, template_name: str) -> list[str]:
    """Paths of the presentation tables named after a template."""
    return sorted(
        p for p, o in presentation_tables(nwb, io).items() if _shows(o.name, template_name)
    )


@dataclass(frozen=True)
class Presentations:
    """The tables as read, the frames they show, and where both came from.

    Attributes:
        tables: one per ``--presentations``, ``num_frames`` of its template.
        paths: the tables' paths in the file.
        frames: all the templates as one source; ``offsets[k]`` is where table k's template
            begins in it.
        offsets: (K,) int64.
        templates: each table's template, as named (a path in the file or a ``.npy``).
        grey: the pixel value of a grey frame (None when no row is grey).
    """

    tables: list[PresentationTable]
    paths: list[str]
    frames: Frames | FrameStack
    offsets: np.ndarray
    templates: list[str]
    grey: float | None


def _find_table(nwb: Any, io: Any, name: str, src: Path) -> tuple[str, Any]:
    nw = pynwb()
    every = {
        path_of(io, o): o for o in nwb.objects.values() if isinstance(o, nw.epoch.TimeIntervals)
    }
    hits = pick(every, name) or pick(every, name + _SUFFIX)
    with_frames = sorted(presentation_tables(nwb, io))
    if not hits:
        have = listing(with_frames) if with_frames else "none"
        raise DataError(
            f"{src}: no intervals table called {name!r} for --presentations; the file's "
            f"presentation tables (with a frame column): {have}"
        )
    if len(hits) > 1:
        raise DataError(
            f"{src}: {len(hits)} intervals tables are called {name!r} ({listing(sorted(hits))}); "
            "pass the full path to --presentations"
        )
    where, table = hits[0], every[hits[0]]
    if frame_column(table) is None:
        raise DataError(
            f"{src}: {where} has no frame column ({' / '.join(FRAME_COLUMNS)}; it has "
            f"{', '.join(table.colnames)}): it shows no movie frames; pass a table that does "
            f"({listing(with_frames) or 'the file has none'})"
        )
    return where, table


def _templates_in_file(nwb: Any, io: Any) -> dict[str, Any]:
    nw = pynwb()
    return {
        path_of(io, o): o
        for o in nwb.objects.values()
        if isinstance(o, nw.image.ImageSeries) and not isinstance(o, nw.image.IndexSeries)
    }


def _npy(path: Path, src: Path) -> Frames:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"--template {path}: cannot read it as a .npy array ({e})") from e
    return Frames(data, what=f"--template {path}")


def _template(nwb: Any, io: Any, spec: str | None, table: str, src: Path) -> tuple[str, Frames]:
    """(where, frames) of the template a table shows."""
    if spec is not None and (spec.endswith(".npy") or Path(spec).is_file()):
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"--template {spec}: no such file; pass a .npy of the movie's frames")
        return str(path), _npy(path, src)
    found = _templates_in_file(nwb, io)
    stored = {p: o for p, o in found.items() if p.startswith("stimulus/templates/")}
    if spec is not None:
        hits = pick(found, spec)
        if len(hits) != 1:
            what = "no ImageSeries" if not hits else f"{len(hits)} ImageSeries"
            raise DataError(
                f"{src}: {what} called {spec!r} for --template; the file's templates: "
                f"{listing(sorted(stored)) or 'none'} (or pass a .npy of the movie's frames)"
            )
        where = hits[0]
    else:
        named = sorted(
            (p for p, o in stored.items() if _shows(table, o.name)),
            key=lambda p: -len(_stem(stored[p].name)),
        )
        if named:
            where = named[0]
        elif len(stored) == 1:
            where = next(iter(stored))
        elif not stored:
            raise DataError(
                f"{src}: {table} shows frames of a movie template but the file keeps none in "
                "stimulus/templates (Allen Visual Coding Neuropixels files do not: AllenSDK's "
                "EcephysProjectCache.get_natural_movie_template gives it); save the movie with "
                "numpy.save and pass --template FILE.npy"
            )
        else:
            raise DataError(
                f"{src}: which template does {table} show? the file's templates: "
                f"{listing(sorted(stored))}; pass --template NAME"
            )
    series = found[where]
    return where, Frames(series.data, what=f"{src}: {where}")


def _column(table: Any, name: str) -> np.ndarray:
    return np.asarray(table[name].data[()], dtype=np.float64).reshape(-1)


def read_presentations(
    nwb: Any, io: Any, names: Sequence[str], templates: Sequence[str], src: Path
) -> Presentations:
    """The ``--presentations`` tables and their ``--template`` frames (module docstring).

    Raises:
        DataError: a table or template that is not there or does not fit (one line).
    """
    if templates and len(templates) not in (1, len(names)):
        raise DataError(
            f"{len(names)} --presentations but {len(templates)} --template; give one template "
            "for all the tables or one per table, in order"
        )
    specs: list[str | None] = [None] * len(names)
    if templates:
        specs = [templates[0]] * len(names) if len(templates) == 1 else list(templates)
    tables: list[PresentationTable] = []
    paths: list[str] = []
    sources: dict[str, Frames] = {}
    used: list[str] = []
    for name, spec in zip(names, specs, strict=True):
        where, table = _find_table(nwb, io, name, src)
        if spec is not None and spec in sources:
            t_where, frames = spec, sources[spec]
        else:
            t_where, frames = _template(nwb, io, spec, table.name, src)
            frames = sources.setdefault(t_where, frames)
        block = _column(table, "stimulus_block") if "stimulus_block" in table.colnames else None
        column = frame_column(table)
        assert column is not None
        tables.append(
            PresentationTable(
                name=table.name,
                start=_column(table, "start_time"),
                stop=_column(table, "stop_time"),
                frame=_column(table, column),
                block=block,
                num_frames=int(frames.data.shape[0]),
            )
        )
        paths.append(where)
        used.append(t_where)
    distinct = list(dict.fromkeys(used))
    shapes = {sources[u].frame_shape for u in distinct}
    dtypes = {sources[u].dtype for u in distinct}
    if len(shapes) > 1 or len(dtypes) > 1:
        desc = [
            f"{u} ({'x'.join(map(str, sources[u].frame_shape))} {sources[u].dtype})"
            for u in distinct
        ]
        raise DataError(
            f"the templates differ in frame shape or dtype ({', '.join(desc)}); one session needs "
            "one frame size: import these tables into separate sessions"
        )
    stack = (
        sources[distinct[0]] if len(distinct) == 1 else FrameStack([sources[u] for u in distinct])
    )
    starts = np.cumsum([0] + [int(sources[u].data.shape[0]) for u in distinct])
    offsets = np.array([starts[distinct.index(u)] for u in used], dtype=np.int64)
    grey = None
    if any(((np.isnan(t.frame)) | (t.frame == GREY)).any() for t in tables):
        lo, hi = zip(*(sources[u].value_range() for u in distinct), strict=True)
        mid = (min(lo) + max(hi)) / 2
        grey = float(np.floor(mid)) if np.dtype(stack.dtype).kind in "iu" else mid
    return Presentations(tables, paths, stack, offsets, used, grey)
