"""Writing NWB files in the Allen Brain Observatory / OpenScope layout with pynwb, for the tests.

The layout follows AllenSDK's ecephys writer (``allensdk/brain_observatory/ecephys/write_nwb``
and ``allensdk/brain_observatory/nwb``) and the files on DANDI (000021/000022 Visual Coding
Neuropixels, 000690 OpenScope): the movie is an untimed template in ``stimulus/templates``, each
shown frame a row of ``intervals/<stimulus>_presentations`` (``start_time``, ``stop_time``,
``stimulus_name``, ``stimulus_block``, ``frame``, ``contrast``... all float but the name), units
with AllenSDK's QC metrics and ``peak_channel_id`` naming a row of the electrodes table
(``location``, ``group_name``, ``probe_id``), ``invalid_times`` tagged ``[scope, id, label]``,
``processing/running/running_speed`` stamped at the start of each interval it averages with
``running_speed_end_times`` at the ends, AllenSDK's ``pupil_ellipse_fits`` table with a
``timestamps`` column, and OpenScope's ``acquisition/EyeTracking`` (an EllipseEyeTracking of
ndx-ellipse-eye-tracking, rebuilt here from its spec: EllipseSeries ``pupil_tracking`` with
``area`` and ``likely_blink`` on the same timestamps).

A uniquely named module (not conftest), like ``nwb_helpers``.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from nwb_helpers import new_nwb, write_nwb
from pynwb import ProcessingModule, TimeSeries
from pynwb.epoch import TimeIntervals
from pynwb.image import ImageSeries

DT = 1 / 30  # the movie's frame interval
NUM_FRAMES, H, W = 12, 6, 8
PROBES = {"probeA": 760, "probeB": 761}
# id, probe, location of each electrode (Allen channel ids are large numbers).
ELECTRODES = [
    (1000, "probeA", "VISp"),
    (1001, "probeA", "VISp"),
    (1002, "probeA", "CA1"),
    (1003, "probeB", "LGd"),
    (1004, "probeB", "VISp"),
    (1005, "probeB", "VISp"),
]
# unit id, peak channel, quality, amplitude_cutoff, presence_ratio, isi_violations
UNITS = [
    (950001, 1000, "good", 0.02, 0.99, 0.1),  # passes AllenSDK's QC, VISp, probeA
    (950002, 1001, "noise", 0.02, 0.99, 0.1),  # a noise unit
    (950003, 1003, "good", 0.05, 0.97, 0.2),  # passes, LGd, probeB
    (950004, 1004, "good", 0.05, 0.92, 0.2),  # presence 0.92: fails AllenSDK's 0.95
    (950005, 1000, "good", 0.30, 0.99, 0.1),  # amplitude cutoff fails
    (950006, 1005, "good", 0.05, 0.99, 0.80),  # isi violations fail
]
ALLEN_QC_KEEPS = [950001, 950003]


@dataclass
class Rows:
    """The rows of one presentation table, as written."""

    name: str
    start: np.ndarray
    stop: np.ndarray
    frame: np.ndarray
    block: np.ndarray  # stimulus_block of each row


@dataclass
class AllenSession:
    """What was written, to check the import against."""

    path: Path
    template: np.ndarray  # (F, H, W) uint8
    tables: dict[str, Rows]
    spikes: dict[int, np.ndarray]
    invalid: list[tuple[float, float, list[str]]]
    run: tuple[np.ndarray, np.ndarray, np.ndarray]  # starts, ends, speed
    fits: tuple[np.ndarray, np.ndarray]  # timestamps, width
    pupil: tuple[np.ndarray, np.ndarray, np.ndarray]  # timestamps, area, likely_blink
    extra: dict[str, Any] = field(default_factory=dict)


def _run(t0: float, frames: list[float], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Rows shown back to back from t0: starts with photodiode jitter, each ending at the next."""
    n = len(frames)
    start = t0 + np.arange(n) * DT + rng.uniform(-0.002, 0.002, n)
    stop = np.r_[start[1:], start[-1] + DT]
    return start, stop, np.asarray(frames, dtype=np.float64)


def allen_rows(rng: np.random.Generator) -> dict[str, Rows]:
    """natural_movie_one: two repeats in order, a 0.5-s pause, a third (stimulus_block 2);
    natural_movie_one_shuffled: two permutations, each followed by a blank row (-1, NaN), in
    stimulus_blocks 5 and 6 back to back."""
    order = list(range(NUM_FRAMES))
    a1 = _run(10.0, order + order, rng)
    a2 = _run(a1[1][-1] + 0.5, order, rng)
    p1, p2 = rng.permutation(NUM_FRAMES).tolist(), rng.permutation(NUM_FRAMES).tolist()
    b = _run(20.0, [*p1, -1.0, *p2, np.nan], rng)
    return {
        "natural_movie_one_presentations": Rows(
            "natural_movie_one_presentations",
            np.r_[a1[0], a2[0]],
            np.r_[a1[1], a2[1]],
            np.r_[a1[2], a2[2]],
            np.full(3 * NUM_FRAMES, 2.0),
        ),
        "natural_movie_one_shuffled_presentations": Rows(
            "natural_movie_one_shuffled_presentations",
            b[0],
            b[1],
            b[2],
            np.repeat([5.0, 6.0], NUM_FRAMES + 1),
        ),
    }


def _presentations(rows: Rows, stim_ts: TimeSeries) -> TimeIntervals:
    table = TimeIntervals(
        name=rows.name,
        description=f"Presentation times and stimuli details for '{rows.name}' stimuli",
    )
    for col, doc in (
        ("stimulus_name", "Name of stimulus"),
        ("stimulus_block", "Index of contiguous presentations of one stimulus type"),
        ("frame", "Frame of movie stimulus"),
        ("contrast", "Contrast of stimulus"),
    ):
        table.add_column(name=col, description=doc)
    for a, b, f, k in zip(rows.start, rows.stop, rows.frame, rows.block, strict=True):
        table.add_interval(
            start_time=float(a),
            stop_time=float(b),
            stimulus_name=rows.name.removesuffix("_presentations"),
            stimulus_block=float(k),
            frame=float(f),
            contrast=1.0,
            tags=["stimulus_time_interval"],
            timeseries=[stim_ts],
        )
    return table


@functools.cache
def ellipse_classes() -> tuple[Any, Any]:
    """EllipseSeries and EllipseEyeTracking, from a copy of ndx-ellipse-eye-tracking's spec."""
    from pynwb import get_class, load_namespaces
    from pynwb.spec import NWBDatasetSpec, NWBGroupSpec, NWBNamespaceBuilder

    name = "ndx-ellipse-eye-tracking"
    ns = NWBNamespaceBuilder(
        doc="ellipse eye tracking (a copy for the tests)",
        name=name,
        version="0.1.0",
        author="tests",
        contact="tests@example.org",
    )
    for t in ("SpatialSeries", "NWBDataInterface", "TimeSeries"):
        ns.include_type(t, namespace="core")
    ellipse = NWBGroupSpec(
        neurodata_type_def="EllipseSeries",
        neurodata_type_inc="SpatialSeries",
        doc="Information about an ellipse moving over time",
        datasets=[
            NWBDatasetSpec(name=n, doc=n, dtype="float32", shape=[None])
            for n in ("area", "width", "height", "angle")
        ],
    )
    tracking = NWBGroupSpec(
        neurodata_type_def="EllipseEyeTracking",
        neurodata_type_inc="NWBDataInterface",
        doc="Stores detailed eye tracking information output from DeepLabCut",
        default_name="EyeTracking",
        groups=[
            NWBGroupSpec(name="eye_tracking", neurodata_type_inc="EllipseSeries", doc="eye"),
            NWBGroupSpec(name="pupil_tracking", neurodata_type_inc="EllipseSeries", doc="pupil"),
            NWBGroupSpec(name="likely_blink", neurodata_type_inc="TimeSeries", doc="blinks"),
        ],
    )
    out = Path(tempfile.mkdtemp(prefix="ndx-ellipse-"))
    for spec in (ellipse, tracking):
        ns.add_spec(f"{name}.extensions.yaml", spec)
    ns.export(f"{name}.namespace.yaml", outdir=str(out))
    load_namespaces(str(out / f"{name}.namespace.yaml"))
    return get_class("EllipseSeries", name), get_class("EllipseEyeTracking", name)


def write_allen(path: Path, *, template_in_file: bool = True, seed: int = 0) -> AllenSession:
    """An Allen-like ecephys session (module docstring) and what it holds."""
    rng = np.random.default_rng(seed)
    nwb = new_nwb("715093703")
    template = rng.integers(1, 255, (NUM_FRAMES, H, W)).astype(np.uint8)
    template[0, 0, 0], template[1, 0, 0] = 0, 255  # a 0..255 movie: its grey is 127
    if template_in_file:
        # AllenSDK's templates carry NaN timestamps: they are shown by the presentation rows.
        nwb.add_stimulus_template(
            ImageSeries(
                name="natural_movie_one",
                data=template,
                unit="NA",
                format="raw",
                timestamps=np.full(NUM_FRAMES, np.nan),
            )
        )
    tables = allen_rows(rng)
    every_start = np.sort(np.concatenate([r.start for r in tables.values()]))
    stim_mod = ProcessingModule(name="stimulus", description="Stimulus Times processing")
    nwb.add_processing_module(stim_mod)
    stim_ts = TimeSeries(name="timestamps", data=every_start, timestamps=every_start, unit="s")
    stim_mod.add(stim_ts)
    for rows in tables.values():
        nwb.add_time_intervals(_presentations(rows, stim_ts))
    spont = TimeIntervals(name="spontaneous_presentations", description="grey screen")
    spont.add_column(name="stimulus_name", description="Name of stimulus")
    spont.add_interval(start_time=12.5, stop_time=19.5, stimulus_name="spontaneous")
    nwb.add_time_intervals(spont)

    groups = {}
    for probe in PROBES:
        dev = nwb.create_device(name=probe, description="Neuropixels 1.0 Probe")
        groups[probe] = nwb.create_electrode_group(
            name=probe,
            description="Ecephys Electrode Group",
            location="See electrode locations",
            device=dev,
        )
    nwb.add_electrode_column(
        name="probe_id", description="The unique id of this electrode's device"
    )
    nwb.add_electrode_column(name="local_index", description="The local index of electrode")
    for k, (eid, probe, loc) in enumerate(ELECTRODES):
        nwb.add_electrode(
            id=eid, location=loc, group=groups[probe], probe_id=PROBES[probe], local_index=k
        )

    for col, doc in (
        ("quality", "no description"),
        ("amplitude_cutoff", "no description"),
        ("presence_ratio", "no description"),
        ("isi_violations", "no description"),
        ("peak_channel_id", "no description"),
        ("firing_rate", "no description"),
    ):
        nwb.add_unit_column(name=col, description=doc)
    spikes = {}
    for uid, peak, quality, amp, pres, isi in UNITS:
        sp = np.sort(rng.uniform(9.5, 22.0, 500))
        spikes[uid] = sp
        nwb.add_unit(
            id=uid,
            spike_times=sp,
            quality=quality,
            amplitude_cutoff=amp,
            presence_ratio=pres,
            isi_violations=isi,
            peak_channel_id=peak,
            firing_rate=sp.size / 12.5,
        )

    invalid = [
        (10.2, 10.3, ["EcephysProbe", str(PROBES["probeA"]), "probeA"]),
        (20.1, 20.15, ["EcephysSession", "715093703", "all_probes"]),
        (10.5, 10.55, ["EcephysSession", "715093703", "optotagging"]),
    ]
    for a, b, tags in invalid:
        nwb.add_invalid_time_interval(start_time=a, stop_time=b, tags=tags)

    # Running speed as AllenSDK writes it: each value the mean over [start, end) of one
    # stimulus frame of the 60 Hz monitor, stamped at its start.
    run_start = 9.0 + np.arange(14 * 60) / 60 + rng.uniform(-0.001, 0.001, 14 * 60)
    run_end = np.r_[run_start[1:], run_start[-1] + 1 / 60]
    speed = 20 + 10 * np.sin(run_start * 3.0) + rng.normal(0, 1, run_start.size)
    running = ProcessingModule(name="running", description="running speed data")
    nwb.add_processing_module(running)
    speed_ts = TimeSeries(name="running_speed", data=speed, timestamps=run_start, unit="cm/s")
    running.add(speed_ts)
    running.add(
        TimeSeries(
            name="running_speed_end_times",
            data=np.full(run_start.size, np.nan),
            timestamps=run_end,
            unit="cm/s",
        )
    )
    running.add(
        TimeSeries(
            name="running_wheel_rotation",
            data=speed / 100,
            timestamps=speed_ts,
            unit="radians",
        )
    )

    # AllenSDK's ellipse fits: a DynamicTable with a timestamps column, at the eye camera's rate.
    from hdmf.common import DynamicTable

    cam_t = 9.0 + np.arange(14 * 60) / 60 + 0.004
    width = 30 + 5 * np.cos(cam_t * 2.0)
    eye_mod = ProcessingModule(name="eye_tracking", description="Eye tracking processing module")
    nwb.add_processing_module(eye_mod)
    fits = DynamicTable(
        name="pupil_ellipse_fits", description="pupil ellipse fits", id=np.arange(cam_t.size)
    )
    for col, values in (
        ("center_x", 100 + np.sin(cam_t)),
        ("center_y", 80 + np.cos(cam_t)),
        ("height", width * 0.9),
        ("phi", np.zeros(cam_t.size)),
        ("width", width),
        ("timestamps", cam_t),
    ):
        fits.add_column(name=col, description="no description", data=values)
    eye_mod.add(fits)

    # OpenScope's EllipseEyeTracking: pupil area, and blinks on the same timestamps.
    ellipse, tracking = ellipse_classes()
    area = (400 + 50 * np.sin(cam_t)).astype(np.float32)
    blink = (cam_t >= 20.5) & (cam_t < 20.6)
    area[blink] = 0.0  # the fit collapses while the eye is shut

    def series(name: str, values: np.ndarray, **kw: Any) -> Any:
        ones = np.ones(cam_t.size, np.float32)
        return ellipse(
            name=name,
            data=np.stack([100 + np.sin(cam_t), 80 + np.cos(cam_t)], 1),
            reference_frame="nose",
            area=values,
            width=ones,
            height=ones,
            angle=0 * ones,
            **kw,
        )

    pupil = series("pupil_tracking", area, timestamps=cam_t)
    nwb.add_acquisition(
        tracking(
            name="EyeTracking",
            eye_tracking=series("eye_tracking", area * 4, timestamps=pupil),
            pupil_tracking=pupil,
            likely_blink=TimeSeries(
                name="likely_blink", data=blink, timestamps=pupil, unit="N/A", description="blinks"
            ),
        )
    )
    write_nwb(nwb, path)
    return AllenSession(
        path=path,
        template=template,
        tables=tables,
        spikes=spikes,
        invalid=invalid,
        run=(run_start, run_end, speed),
        fits=(cam_t, width),
        pupil=(cam_t, area.astype(np.float64), blink),
    )


def write_nwb1(path: Path) -> Path:
    """An NWB 1 file as AllenSDK's Brain Observatory releases were (h5py; pynwb cannot read it):
    ``nwb_version`` a root dataset ``NWB-1.0.5``, series marked by ``neurodata_type`` and
    ``ancestry``, the movie template under ``stimulus/templates`` without timestamps."""
    with warnings.catch_warnings(), h5py.File(path, "w") as f:
        warnings.simplefilter("ignore")
        f.create_dataset("nwb_version", data=b"NWB-1.0.5")
        f.create_dataset("identifier", data=b"501940850")
        f.create_dataset("session_start_time", data=b"Tue May 10 10:20:00 2016")
        f.create_dataset("file_create_date", data=[b"2016-06-01T00:00:00"])
        for g in ("acquisition/timeseries", "analysis", "epochs", "general", "processing"):
            f.create_group(g)
        tmpl = f.create_group("stimulus/templates/natural_movie_one_image_stack")
        tmpl.attrs["neurodata_type"] = b"TimeSeries"
        tmpl.attrs["ancestry"] = [b"TimeSeries", b"ImageSeries"]
        tmpl.create_dataset("data", data=np.zeros((4, 6, 8), np.uint8))
        pres = f.create_group("stimulus/presentation/natural_movie_one_stimulus")
        pres.attrs["neurodata_type"] = b"TimeSeries"
        pres.attrs["ancestry"] = [b"TimeSeries", b"IndexSeries"]
        pres.create_dataset("data", data=np.arange(4))
        pres.create_dataset("timestamps", data=np.arange(4) / 30.0)
    return path
