"""Write an NWB file the way a lab would, with pynwb alone (no code of vivit-hpo).

A mouse watches ``natural_movie_one`` (a 30 Hz movie of drifting, cut natural-like scenes, timed
by a photodiode: jittered frame times, a few dropped frames) in 12 trials of 50 s with a grey
screen in between (no frames then); 48 units of V1 (Gabor-like simple and complex cells whose
gain grows with running) are spike-sorted, some losing isolation for a while (``obs_intervals``).
The file also holds what a real one would: the running speed from a wheel encoder at 100 Hz in
the processing module ``behavior``, the pupil area at 30 Hz (NaN during blinks) in
``eye_tracking``, an eye-camera ImageSeries and a photodiode trace in ``acquisition``, and the
trials table.

    python examples/write_lab_nwb.py lab/mouse1.nwb
    vivit-hpo data import-nwb lab/mouse1.nwb --out lab/mouse1.h5 --stimulus natural_movie_one \\
        --behavior running_speed --behavior pupil_area
    vivit-hpo data inspect lab/mouse1.h5

Every number is drawn from ``--seed``; the true rates are not stored (a lab does not know them).
"""

from __future__ import annotations

import argparse
import datetime
import warnings
from pathlib import Path

import numpy as np
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import BehavioralTimeSeries, PupilTracking
from pynwb.file import Subject
from pynwb.image import ImageSeries

FPS = 30.0
SIZE = 36
TRIAL_S = 50.0
GREY_S = 3.0
TRIALS = 12
UNITS = 48


def pink(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """(n, side, side) images with a 1/f amplitude spectrum, zero mean, unit std."""
    f = np.sqrt(np.fft.fftfreq(side)[:, None] ** 2 + np.fft.rfftfreq(side)[None, :] ** 2)
    spec = np.fft.rfft2(rng.standard_normal((n, side, side))) / np.maximum(f, 1.0 / side)
    img = np.fft.irfft2(spec, s=(side, side))
    img -= img.mean(axis=(1, 2), keepdims=True)
    return img / img.std(axis=(1, 2), keepdims=True)


def movie(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(frames, SIZE, SIZE) uint8: a window drifting over large scenes, a cut every 2-6 s."""
    scenes = pink(rng, 24, 4 * SIZE)
    out = np.empty((frames, SIZE, SIZE), np.uint8)
    i = 0
    while i < frames:
        n = min(frames - i, int(rng.uniform(2, 6) * FPS))
        img = scenes[rng.integers(len(scenes))]
        pos = rng.uniform(0, 3 * SIZE, 2)
        vel = rng.normal(0, 0.6, 2)  # pixels per frame
        for k in range(n):
            y, x = np.clip(pos + k * vel, 0, 3 * SIZE - 1).astype(int)
            out[i + k] = np.clip(128 + 40 * img[y : y + SIZE, x : x + SIZE], 0, 255)
        i += n
    return out


def drive(rng: np.random.Generator, stim: np.ndarray) -> np.ndarray:
    """(frames, UNITS) stimulus drive of each unit, mean 1, through a 100 ms temporal kernel."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    cy, cx = rng.uniform(0.3, 0.7, (2, UNITS)) * SIZE
    sigma = rng.uniform(2.5, 4.5, UNITS)
    theta = rng.uniform(0, np.pi, UNITS)
    lam = sigma * rng.uniform(2.0, 3.0, UNITS)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    env = np.exp(-(dx**2 + dy**2) / (2 * sigma[:, None, None] ** 2))
    u = dx * np.cos(theta)[:, None, None] + dy * np.sin(theta)[:, None, None]
    even = (env * np.cos(2 * np.pi * u / lam[:, None, None])).reshape(UNITS, -1)
    odd = (env * np.sin(2 * np.pi * u / lam[:, None, None])).reshape(UNITS, -1)
    x = (stim.reshape(len(stim), -1).astype(np.float32) - 128.0) / 40.0
    kern = np.array([0.0, 0.6, 1.0, 0.5, -0.2, -0.3, -0.1])  # frames 0..6 back (0-200 ms)
    lin_e = np.zeros((len(stim), UNITS))
    lin_o = np.zeros((len(stim), UNITS))
    pe, po = x @ even.T, x @ odd.T
    for lag, k in enumerate(kern):
        lin_e[lag:] += k * pe[: len(stim) - lag]
        lin_o[lag:] += k * po[: len(stim) - lag]
    lin_e /= lin_e.std(0)
    lin_o /= lin_o.std(0)
    simple = np.maximum(lin_e - 0.3, 0) ** 1.5
    complex_ = lin_e**2 + lin_o**2
    d = np.where(np.arange(UNITS) % 2 == 0, simple, complex_)
    return d / d.mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the NWB file to write")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    per_trial = int(TRIAL_S * FPS)
    stim = movie(rng, TRIALS * per_trial)
    # Photodiode-timed frames: 1 ms jitter, a dropped frame now and then, grey between trials.
    onsets = 10.0 + np.arange(TRIALS) * (TRIAL_S + GREY_S)
    times = np.concatenate([t0 + np.arange(per_trial) / FPS for t0 in onsets])
    times += rng.normal(0, 0.001, times.shape)
    for i in rng.choice(len(times), 4, replace=False):
        times[i : (i // per_trial + 1) * per_trial] += 1 / FPS  # the screen missed a refresh
    end = times[-1] + 20.0

    # Running: bouts of a few seconds, from a wheel encoder at 100 Hz over the whole session.
    wheel_t = np.arange(0.0, end, 0.01)
    state = np.zeros_like(wheel_t)
    i = 0
    while i < len(state):
        n = int(rng.exponential(600))
        state[i : i + n] = rng.uniform(5, 30) if rng.random() < 0.5 else 0.0
        i += n
    speed = np.convolve(state, np.ones(50) / 50, mode="same") + rng.normal(0, 0.5, len(state))
    # Pupil area at 30 Hz on the eye camera's clock, larger when running, NaN during blinks.
    eye_t = np.arange(0.0, end, 1 / FPS)
    pupil = 900 + 15 * np.interp(eye_t, wheel_t, speed) + rng.normal(0, 20, len(eye_t))
    for b in rng.integers(0, len(eye_t) - 10, 40):
        pupil[b : b + 6] = np.nan

    # Spikes: rates from the movie and the running gain, drawn within each frame's interval.
    d = drive(rng, stim)
    run_z = np.interp(times, wheel_t, speed)
    run_z = (run_z - run_z.mean()) / run_z.std()
    base = np.exp(rng.uniform(np.log(2), np.log(15), UNITS))  # spikes/s
    rate = base * (0.3 + d) * np.exp(rng.normal(0.3, 0.1, UNITS) * run_z[:, None]) / 1.4
    stops = np.r_[times[1:], times[-1] + 1 / FPS]
    width = np.minimum(stops - times, 1.5 / FPS)
    counts = rng.poisson(rate * width[:, None])
    spikes = []
    for j in range(UNITS):
        k = np.repeat(np.arange(len(times)), counts[:, j])
        on = np.sort(times[k] + rng.random(k.size) * width[k])
        off = np.sort(rng.uniform(0, end, rng.poisson(base[j] * 0.5 * (end - TRIALS * TRIAL_S))))
        grey = ~((off[:, None] >= onsets) & (off[:, None] < onsets + TRIAL_S)).any(1)
        spikes.append(np.sort(np.r_[on, off[grey]]))  # also fires in the grey and before

    nwb = NWBFile(
        session_description="natural movie viewing, head-fixed on a wheel",
        identifier=f"mouse1-{args.seed}",
        session_start_time=datetime.datetime(2024, 3, 14, 10, 0, tzinfo=datetime.timezone.utc),
        experimenter=["A. Lab"],
        lab="Visual Coding Lab",
        institution="Somewhere",
        session_id="mouse1_day3",
    )
    nwb.subject = Subject(subject_id="mouse1", species="Mus musculus", age="P90D", sex="F")
    nwb.add_stimulus(
        ImageSeries(
            name="natural_movie_one",
            data=stim,
            unit="n.a.",
            timestamps=times,
            description="grey-scale natural movie, photodiode-aligned frame onsets",
        )
    )
    nwb.add_acquisition(
        ImageSeries(
            name="eye_camera",
            data=rng.integers(0, 255, (300, 8, 8), dtype=np.uint8),
            unit="n.a.",
            rate=FPS,
            starting_time=0.0,
        )
    )
    nwb.add_acquisition(TimeSeries(name="photodiode", data=rng.random(1000), unit="V", rate=1000.0))
    behavior = nwb.create_processing_module("behavior", "running on the wheel")
    wheel = BehavioralTimeSeries(name="BehavioralTimeSeries")
    wheel.add_timeseries(
        TimeSeries(name="running_speed", data=speed, unit="cm/s", timestamps=wheel_t)
    )
    behavior.add(wheel)
    eye = nwb.create_processing_module("eye_tracking", "pupil from the eye camera")
    eye.add(
        PupilTracking(
            name="PupilTracking",
            time_series=TimeSeries(name="pupil_area", data=pupil, unit="px^2", timestamps=eye_t),
        )
    )
    for t0 in onsets:
        nwb.add_trial(start_time=t0, stop_time=t0 + TRIAL_S)
    nwb.add_unit_column("quality", "spike-sorting label")
    for j in range(UNITS):
        lost = rng.random() < 0.25
        if lost:  # isolation lost for 60 s somewhere in the session
            a = rng.uniform(0, end - 60)
            obs = [[0.0, a], [a + 60, end]]
        else:
            obs = [[0.0, end]]
        nwb.add_unit(spike_times=spikes[j], obs_intervals=obs, quality="good" if j % 5 else "mua")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(args.out), "w") as io:
            io.write(nwb)
    print(f"wrote {args.out}: {len(times)} frames, {UNITS} units, {sum(map(len, spikes))} spikes")


if __name__ == "__main__":
    main()
