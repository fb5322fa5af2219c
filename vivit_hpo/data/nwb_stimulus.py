"""The stimulus of an NWB file as a timeline: the series whose frames were shown at its times.

- ``--stimulus NAME``: the ImageSeries, OpticalSeries or IndexSeries called NAME anywhere in the
  file (``stimulus``, ``acquisition`` or a processing module); by default the file's only one,
  leaving out imaging series (TwoPhotonSeries...) and movie templates.
- A movie *template* is never a timeline: a series in ``stimulus/templates``, one an IndexSeries
  indexes, or one whose timestamps are NaN (AllenSDK's templates) or its own frame indices
  0..N-1. Its frames were shown by presentation tables (``--presentations``) or an IndexSeries;
  naming it with ``--stimulus`` is refused with one line that names those, and so is a file
  whose only image series are templates when ``--stimulus`` is left out.
- Frames come from ``data`` (``(frames, H, W)``, or ``(frames, H, W, C)`` with C <= 4), or, for
  an IndexSeries, from the images it indexes (an ``Images`` container, in ``order_of_images``
  order, or a template ImageSeries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vivit_hpo.data.frames import Frames
from vivit_hpo.data.nwb_common import listing, path_of, pick, pynwb
from vivit_hpo.data.nwb_presentations import presentation_tables, tables_showing
from vivit_hpo.data.presentations import template_times_reason
from vivit_hpo.errors import DataError

__all__ = ["IMAGING", "find_stimulus", "frames_of"]

# ImageSeries subclasses that hold a recording, not a stimulus: never a default stimulus.
IMAGING = ("TwoPhotonSeries", "OnePhotonSeries", "ImageMaskSeries")


def _timestamps(series: Any) -> np.ndarray | None:
    stamps = series.timestamps
    if stamps is None or isinstance(stamps, np.ndarray):
        return stamps
    return np.asarray(stamps[()] if hasattr(stamps, "shape") else stamps)


def _template_reason(path: str, series: Any, indexed: set[int]) -> str | None:
    """Why a series is a movie template (see the module docstring), or None."""
    if path.startswith("stimulus/templates/"):
        return "it is kept in stimulus/templates"
    if id(series) in indexed:
        return "an IndexSeries indexes it"
    if type(series).__name__ == "IndexSeries":
        return None
    return template_times_reason(_timestamps(series))


def _template_error(
    nwb: Any, io: Any, series: list[Any], reason: str, src: Path, lead: str
) -> DataError:
    """One line: the template(s) are no timeline; what shows their frames; what to pass."""
    nw = pynwb()
    ids = {id(s) for s in series}
    tables = sorted({t for s in series for t in tables_showing(nwb, io, s.name)})
    index = sorted(
        path_of(io, o)
        for o in nwb.objects.values()
        if isinstance(o, nw.image.IndexSeries) and id(o.indexed_timeseries) in ids
    )
    shown = [f"the presentations tables {listing(tables)}"] if tables else []
    shown += [f"the IndexSeries {listing(index)}"] if index else []
    if shown:
        who = "its frames are shown by " + " and ".join(shown)
    else:
        every = sorted(presentation_tables(nwb, io))
        who = "no presentations table or IndexSeries in the file is named after it" + (
            f" (the file's presentations tables: {listing(every)})" if every else ""
        )
    name = series[0].name
    if tables:
        fix = f"pass --presentations {tables[0].rsplit('/', 1)[-1]} --template {name}"
    elif index:
        fix = f"pass --stimulus {index[0]}"
    else:
        fix = f"pass --presentations TABLE --template {name}"
    return DataError(f"{src}: {lead} ({reason}); {who}; {fix}")


def find_stimulus(nwb: Any, io: Any, name: str | None, src: Path) -> tuple[str, Any]:
    """(path, series) of the stimulus timeline (see the module docstring).

    Raises:
        DataError: no image series, an unknown or ambiguous name, a template, or (without a
            name) no single candidate.
    """
    nw = pynwb()
    image, index = nw.image.ImageSeries, nw.image.IndexSeries
    series = {path_of(io, o): o for o in nwb.objects.values() if isinstance(o, image | index)}
    if not series:
        tables = sorted(presentation_tables(nwb, io))
        hint = (
            f"; its presentations tables ({listing(tables)}) show frames of a movie kept "
            "elsewhere: pass --presentations TABLE --template FILE.npy"
            if tables
            else "; store the stimulus movie as one (frames in `data`, with timestamps or "
            "starting_time + rate)"
        )
        raise DataError(f"{src}: no ImageSeries, OpticalSeries or IndexSeries in the file{hint}")
    kinds = {p: type(o).__name__ for p, o in series.items()}
    described = [f"{p} ({kinds[p]})" for p in sorted(series)]
    indexed = {
        id(o.indexed_timeseries)
        for o in series.values()
        if isinstance(o, index) and o.indexed_timeseries is not None
    }
    if name is not None:
        hits = pick(series, name)
        if not hits:
            raise DataError(
                f"{src}: no ImageSeries called {name!r}; the file has {listing(described)}; "
                "pass one of them to --stimulus"
            )
        if len(hits) > 1:
            raise DataError(
                f"{src}: {len(hits)} series are called {name!r} ({listing(sorted(hits))}); "
                "pass the full path to --stimulus"
            )
        where = hits[0]
        reason = _template_reason(where, series[where], indexed)
        if reason is not None:
            raise _template_error(
                nwb,
                io,
                [series[where]],
                reason,
                src,
                f"{where} is a movie template, not a timeline",
            )
        return where, series[where]
    reasons = {p: _template_reason(p, o, indexed) for p, o in series.items()}
    default = sorted(p for p, o in series.items() if kinds[p] not in IMAGING and reasons[p] is None)
    if len(default) == 1:
        return default[0], series[default[0]]
    templates = sorted(p for p, r in reasons.items() if r is not None)
    if not default and templates:
        lead = "the file's image series are movie templates, not timelines"
        why = "; ".join(f"{p}: {reasons[p]}" for p in templates[:3])
        raise _template_error(nwb, io, [series[p] for p in templates], why, src, lead)
    listed = [f"{p} ({kinds[p]})" for p in default] if default else described
    what = f"{len(default)} image series" if default else "only imaging series"
    raise DataError(
        f"{src}: the file has {what} ({listing(listed)}); pass the stimulus' name to --stimulus"
    )


def frames_of(series: Any, where: str, src: Path) -> Frames:
    nw = pynwb()
    what = f"{src}: {where}"
    if isinstance(series, nw.image.IndexSeries):
        idx = np.asarray(series.data[()], dtype=np.int64).reshape(-1)
        if series.indexed_images is not None:
            imgs = series.indexed_images
            order = imgs.order_of_images
            items = list(order.data) if order is not None else [imgs.images[k] for k in imgs.images]
            arrays = [np.asarray(im.data[()]) for im in items]
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise DataError(
                    f"{what}: the indexed images differ in shape ({sorted(shapes)}); give every "
                    "image the same size"
                )
            templates: Any = np.stack(arrays)
        elif series.indexed_timeseries is not None:
            templates = np.asarray(series.indexed_timeseries.data[()])
        else:
            raise DataError(f"{what}: the IndexSeries indexes no images; link its Images")
        if idx.size and (idx.min() < 0 or idx.max() >= templates.shape[0]):
            raise DataError(
                f"{what}: indices run from {idx.min()} to {idx.max()} but there are "
                f"{templates.shape[0]} images; index the images from 0"
            )
        return Frames(templates, lookup=idx, what=what)
    external = list(series.external_file[()]) if series.external_file is not None else []
    if external and (series.data is None or int(np.prod(series.data.shape)) == 0):
        names = [e.decode() if isinstance(e, bytes) else str(e) for e in external]
        missing = [n for n in names if not (src.parent / n).is_file()]
        if missing:
            raise DataError(
                f"{what}: the frames are in external files that are missing: "
                f"{listing(missing)} (looked next to {src.name}); put them there, or write "
                "the frames into the series' data"
            )
        raise DataError(
            f"{what}: the frames are in external files ({listing(names)}), which import-nwb "
            "cannot decode; write the frames into the series' data (e.g. decode them with "
            "imageio and rewrite the ImageSeries)"
        )
    return Frames(series.data, what=what)
