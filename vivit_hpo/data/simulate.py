"""A simulated V1-like population viewing a free-viewing movie, with its known true rates.

The movie: 1/f ("natural-like") noise images seen through a window of H x W pixels that fixates
for 200-400 ms, jumps (saccades) to a new position, and drifts by single pixels in between;
each trial (a block of 2-5 s) shows a new image.

The units: half are simple cells (one Gabor, half-wave rectified and thresholded) and half
complex cells (the energy of a quadrature Gabor pair), centred at scattered positions in the
middle half of the frame (envelope sigma 10-16% of the frame side, 1-1.5 cycles across it), each
with a separable biphasic temporal kernel peaking 40-70 ms after the frame (the kernel spans
150 ms, so ``num_lags`` should cover at least ~120 ms for a model to reach the oracle). The
drive saturates softly and is added to a baseline; behaviour acts as a multiplicative gain:
running speed and pupil size, two slow latent signals, scale each unit's rate by
``exp(b_run * run + b_pupil * pupil)``. Each unit's mean rate is set to 2-20 spikes/s (log-
uniform), peaks are capped softly near 250 spikes/s, and counts are drawn from a Poisson law.
With the defaults the oracle is about 0.6-0.7 bits per spike; the stimulus carries most of it
(behaviour alone about 0.1).

A session file holds ``stim`` (T, H, W) uint8, ``robs`` (T, N) uint8, ``dfs`` (T, N) uint8
(brief tracking losses and per-unit isolation losses are marked 0), ``behavior`` (T, 4) float32
(run_speed, pupil, eye_x, eye_y, z-scored), ``blocks`` (trials) and ``split``: the simulator
writes the split the loader would draw with the default ``DataConfig`` (so the oracle and every
model are scored on the same bins whatever the run's split settings). The true rates go to
``truth/<name>.h5`` (``rates`` (T, N) float32, and each unit's RF parameters) and the oracle BPS
(the bits per spike of the true rates on each split's sample bins) to ``oracle.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from vivit_hpo._io import atomic_path
from vivit_hpo.config import DataConfig
from vivit_hpo.data.oracle import (
    ORACLE_FILE,
    TRUTH_DIR,
    compute_oracle,
    oracle_bps,
    oracle_split_mean,
)
from vivit_hpo.data.oracle import default_data_config as _default_data_config
from vivit_hpo.data.oracle import oracle_of as _oracle_of
from vivit_hpo.data.split import assign_split
from vivit_hpo.errors import DataError

__all__ = [
    "BEHAVIOR_NAMES",
    "SimulatedSession",
    "SynthResult",
    "compute_oracle",
    "oracle_bps",
    "oracle_split_mean",
    "simulate_session",
    "synthesize",
]

BEHAVIOR_NAMES = ("run_speed", "pupil", "eye_x", "eye_y")


@dataclass(frozen=True)
class SimulatedSession:
    """One simulated session in memory (shapes as in the session file)."""

    name: str
    stim: np.ndarray  # (T, H, W) uint8
    robs: np.ndarray  # (T, N) uint8
    dfs: np.ndarray  # (T, N) uint8
    behavior: np.ndarray  # (T, K) float32
    blocks: np.ndarray  # (T,) int32 trial id
    split: np.ndarray  # (T,) uint8
    rates: np.ndarray  # (T, N) float32 true rate, spikes per bin
    frame_rate: float
    units: dict[str, np.ndarray]  # per-unit RF parameters (see _units)


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize` wrote.

    Attributes:
        out_dir: the folder.
        files: the session files ``out_dir/<name>.h5``.
        truth_files: ``out_dir/truth/<name>.h5``.
        oracle: session -> split -> oracle BPS (also in ``out_dir/oracle.json``).
        mean_rate_hz: session -> mean rate over units, spikes per second.
        num_lags: the L the oracle's sample bins were chosen with.
    """

    out_dir: Path
    files: list[Path]
    truth_files: list[Path]
    oracle: dict[str, dict[str, float]]
    mean_rate_hz: dict[str, float]
    num_lags: int


# ----------------------------------------------------------------------------- the movie


def _pink_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w) float32 images with a 1/f amplitude spectrum, each zero-mean, unit-std."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    amp = 1.0 / np.maximum(f, 1.0 / max(h, w))
    spec = np.fft.rfft2(rng.standard_normal((n, h, w))) * amp
    img = np.fft.irfft2(spec, s=(h, w))
    img -= img.mean(axis=(1, 2), keepdims=True)
    img /= img.std(axis=(1, 2), keepdims=True)
    return img.astype(np.float32)


def _trials(rng: np.random.Generator, t: int, fr: float) -> np.ndarray:
    """(T,) int32 trial id per bin; trials last 2-5 s."""
    lengths: list[int] = []
    while sum(lengths) < t:
        lengths.append(max(1, round(rng.uniform(2.0, 5.0) * fr)))
    return np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)[:t]


def _gaze(
    rng: np.random.Generator, blocks: np.ndarray, fr: float, span: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) int crop offsets (y, x) in [0, span) and (T,) int32 image index per bin.

    Fixations of 200-400 ms, saccades of about a quarter of the image, a new image per trial,
    and a one-pixel random-walk drift within each fixation.
    """
    t = blocks.shape[0]
    pos = np.empty((t, 2), dtype=np.int64)
    img = np.empty(t, dtype=np.int32)
    span_arr = np.asarray(span)
    sacc = max(span) / 4
    trial_start = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]]).tolist()
    trial_end = [*trial_start[1:], t]
    for b, (s, e) in enumerate(zip(trial_start, trial_end, strict=True)):
        img[s:e] = b  # a new image per trial (taken modulo the number of images)
        here = rng.integers(0, span_arr)
        i = s
        while i < e:
            d = min(e - i, max(1, round(rng.uniform(0.2, 0.4) * fr)))
            drift = np.cumsum(rng.integers(-1, 2, size=(d, 2)) * (rng.random((d, 2)) < 0.3), 0)
            pos[i : i + d] = np.clip(here + drift, 0, span_arr - 1)
            here = np.clip(here + rng.normal(0, sacc, 2).round().astype(np.int64), 0, span_arr - 1)
            i += d
    return pos, img


# ----------------------------------------------------------------------------- the units


def _units(rng: np.random.Generator, n: int, h: int, w: int, fr: float) -> dict[str, np.ndarray]:
    """Per-unit parameters: Gabor pairs, temporal kernels, nonlinearity, gains, target rates."""
    side = min(h, w)
    cy = rng.uniform(0.25, 0.75, n) * h
    cx = rng.uniform(0.25, 0.75, n) * w
    sigma = rng.uniform(0.1, 0.16, n) * side
    wavelength = sigma * rng.uniform(2.2, 3.2, n)
    theta = rng.uniform(0, np.pi, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    u = dx * np.cos(theta)[:, None, None] + dy * np.sin(theta)[:, None, None]
    env = np.exp(-(dx**2 + dy**2) / (2 * sigma[:, None, None] ** 2))
    carrier = 2 * np.pi * u / wavelength[:, None, None] + phase[:, None, None]
    gabor = np.stack([env * np.cos(carrier), env * np.sin(carrier)], 1)  # (N, 2, H, W)
    gabor -= gabor.mean(axis=(2, 3), keepdims=True)
    gabor /= np.linalg.norm(gabor.reshape(n, 2, -1), axis=2)[:, :, None, None]

    d = max(2, round(0.15 * fr) + 1)
    t_ms = np.arange(d) / fr * 1000.0
    peak = rng.uniform(40, 70, n)[:, None]
    width = np.maximum(15.0, 0.6 * 1000.0 / fr)  # a lobe at least ~one bin wide
    rebound = rng.uniform(0.2, 0.7, n)[:, None]
    kern = np.exp(-0.5 * ((t_ms - peak) / width) ** 2) - rebound * np.exp(
        -0.5 * ((t_ms - peak - 45) / (1.6 * width)) ** 2
    )
    kern /= np.linalg.norm(kern, axis=1, keepdims=True)  # (N, D)

    return {
        "rf_center": np.stack([2 * cx / w - 1, 2 * cy / h - 1], 1).astype(np.float32),
        "sigma": sigma.astype(np.float32),
        "wavelength": wavelength.astype(np.float32),
        "orientation": theta.astype(np.float32),
        "cell_type": (np.arange(n) % 2).astype(np.uint8),  # 0 simple, 1 complex
        "gabor": gabor.astype(np.float32),
        "temporal_kernel": kern.astype(np.float32),
        "threshold": rng.uniform(0.0, 0.5, n).astype(np.float32),
        "baseline": rng.uniform(0.2, 1.0, n).astype(np.float32),
        "behavior_gain": np.stack([rng.normal(0.35, 0.12, n), rng.normal(0.15, 0.1, n)], 1).astype(
            np.float32
        ),
        "target_rate_hz": np.exp(rng.uniform(np.log(2.0), np.log(20.0), n)).astype(np.float32),
    }


def _smooth(rng: np.random.Generator, t: int, tau_bins: float) -> np.ndarray:
    """(T,) AR(1) noise with time constant ``tau_bins``, z-scored."""
    a = math.exp(-1.0 / max(tau_bins, 1.0))
    x = rng.standard_normal(t)
    # Closed form of an AR(1) filter through a cumulative sum in float64 blocks would overflow
    # for long T; a plain loop over 48k bins costs ~20 ms, so keep it readable.
    out = np.empty(t)
    acc = 0.0
    for i in range(t):
        acc = a * acc + x[i]
        out[i] = acc
    return (out - out.mean()) / (out.std() + 1e-12)


def _behavior(rng: np.random.Generator, t: int, fr: float, pos: np.ndarray) -> np.ndarray:
    """(T, 4) float32 z-scored run_speed, pupil, eye_x, eye_y."""
    # Running: bouts of a two-state process (seconds long), smoothed, non-negative.
    state = np.empty(t)
    on = False
    i = 0
    while i < t:
        d = max(1, round(rng.exponential(4.0 if on else 6.0) * fr))
        state[i : i + d] = rng.uniform(0.5, 1.5) if on else 0.0
        on = not on
        i += d
    k = np.exp(-np.arange(round(fr)) / (0.3 * fr))
    run = np.convolve(state, k / k.sum())[:t] + 0.05 * np.abs(_smooth(rng, t, 0.1 * fr))
    pupil = _smooth(rng, t, 5.0 * fr)
    z = lambda v: (v - v.mean()) / (v.std() + 1e-12)  # noqa: E731
    return np.stack([z(run), pupil, z(pos[:, 1]), z(pos[:, 0])], 1).astype(np.float32)


def _responses(stim: np.ndarray, units: dict[str, np.ndarray]) -> np.ndarray:
    """(T, N) float64 stimulus drive of each unit (before gain and scaling), ≥ 0.

    The spatial filtering is one matmul per chunk of frames, (chunk, H*W) @ (H*W, 2N); the
    temporal kernel is then applied causally (frame t-τ drives bin t, τ ≥ 0).
    """
    t = stim.shape[0]
    g = units["gabor"]
    n = g.shape[0]
    bank = torch.from_numpy(g.reshape(n * 2, -1).T.copy())  # (H*W, 2N)
    proj = np.empty((t, n * 2), dtype=np.float32)
    step = 4096
    for i in range(0, t, step):
        x = torch.from_numpy(stim[i : i + step].reshape(min(step, t - i), -1)).float()
        x = (x - 127.5) / 64.0  # (chunk, H*W) about unit variance
        proj[i : i + step] = (x @ bank).numpy()  # (chunk, 2N)
    kern = units["temporal_kernel"]  # (N, D)
    lin = np.zeros((t, n, 2), dtype=np.float64)
    p3 = proj.reshape(t, n, 2)
    for tau in range(kern.shape[1]):
        lin[tau:] += kern[None, :, tau, None] * p3[: t - tau]
    lin /= lin.std(axis=0, keepdims=True) + 1e-12
    thr = units["threshold"][None, :]
    simple = np.maximum(lin[..., 0] - thr, 0.0)
    complex_ = np.maximum(lin[..., 0] ** 2 + lin[..., 1] ** 2 - 2 * thr, 0.0)
    return np.where(units["cell_type"][None, :] == 0, simple, complex_)


def simulate_session(
    name: str,
    *,
    neurons: int,
    frames: int,
    size: tuple[int, int],
    frame_rate: float,
    seed: int,
    split_cfg: DataConfig | None = None,
) -> SimulatedSession:
    """Simulate one session in memory.

    Args:
        name: the session name.
        neurons: N units.
        frames: T bins.
        size: (H, W) of the frames.
        frame_rate: bins per second.
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        split_cfg: the split settings of the written ``split`` (default ``DataConfig()``).

    Returns:
        The session, with its true rates.
    """
    h, w = size
    fr = float(frame_rate)
    rng = np.random.default_rng(seed)
    blocks = _trials(rng, frames, fr)
    n_trials = int(blocks.max()) + 1
    big = (3 * h, 3 * w)
    images = _pink_images(rng, min(n_trials, 64), *big)
    pos, img = _gaze(rng, blocks, fr, (big[0] - h + 1, big[1] - w + 1))
    img %= images.shape[0]
    lut = np.clip(128.0 + 45.0 * images, 0, 255).round().astype(np.uint8)
    stim = np.empty((frames, h, w), dtype=np.uint8)
    for t in range(frames):
        y, x = pos[t]
        stim[t] = lut[img[t], y : y + h, x : x + w]

    units = _units(rng, neurons, h, w, fr)
    drive = _responses(stim, units)  # (T, N)
    drive /= drive.mean(axis=0, keepdims=True) + 1e-12
    drive = 6.0 * np.tanh(drive / 6.0)  # saturation: peaks at most ~6x the mean drive
    behavior = _behavior(rng, frames, fr, pos)
    log_gain = behavior[:, :2] @ units["behavior_gain"].T.astype(np.float64)  # (T, N)
    rates = np.exp(log_gain) * (units["baseline"][None, :] + drive)
    target = (units["target_rate_hz"] / fr)[None, :]
    rates *= target / rates.mean(axis=0, keepdims=True)
    # Firing saturates near 250 spikes/s; rescale once more to keep each unit's mean rate.
    cap = 250.0 / fr
    rates = cap * np.tanh(rates / cap)
    rates *= target / rates.mean(axis=0, keepdims=True)

    robs = rng.poisson(rates)
    if robs.max() > 255:
        raise AssertionError("a count exceeds uint8; rates are out of the intended range")
    dfs = np.ones((frames, neurons), dtype=np.uint8)
    # Tracking losses (blinks, ~150 ms every ~8 s) void every unit; each unit also loses its
    # isolation for one stretch of about 3% of the session.
    n_blinks = max(1, round(frames / (8 * fr)))
    blen = max(1, round(0.15 * fr))
    for s in rng.integers(0, max(1, frames - blen), n_blinks):
        dfs[s : s + blen] = 0
    lost = max(1, frames // 33)
    for n, s in enumerate(rng.integers(0, max(1, frames - lost), neurons)):
        if rng.random() < 0.5:
            dfs[s : s + lost, n] = 0

    cfg = split_cfg or _default_data_config()
    split = assign_split(
        blocks,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        key=name,
        frame_rate=fr,
        chunk_s=cfg.split_chunk_s,
    )
    return SimulatedSession(
        name=name,
        stim=stim,
        robs=robs.astype(np.uint8),
        dfs=dfs,
        behavior=behavior,
        blocks=blocks,
        split=split,
        rates=rates.astype(np.float32),
        frame_rate=fr,
        units=units,
    )


# ----------------------------------------------------------------------------- writing


@contextmanager
def _staged(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporary names for ``paths``; renamed onto them only if the block finishes."""
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def _write_session(path: Path, s: SimulatedSession, behavior: int = len(BEHAVIOR_NAMES)) -> None:
    """Write ``s`` as a session file with its first ``behavior`` behaviour channels."""
    with h5py.File(path, "w") as f:
        f.create_dataset("stim", data=s.stim)
        f.create_dataset("robs", data=s.robs)
        f.create_dataset("dfs", data=s.dfs)
        if behavior:
            f.create_dataset("behavior", data=s.behavior[:, :behavior])
            f.attrs["behavior_names"] = list(BEHAVIOR_NAMES[:behavior])
        f.create_dataset("blocks", data=s.blocks)
        f.create_dataset("split", data=s.split)
        f.attrs["frame_rate"] = s.frame_rate
        f.attrs["name"] = s.name
        f.attrs["simulated"] = True


def _write_truth(path: Path, s: SimulatedSession, num_lags: int, seed: int) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("rates", data=s.rates)
        for k, v in s.units.items():
            f.create_dataset(f"units/{k}", data=v)
        f.attrs["name"] = s.name
        f.attrs["oracle_num_lags"] = num_lags
        f.attrs["seed"] = seed
        f.attrs["rf_center_convention"] = "(x, y) in [-1, 1], pixel edges at -1 and 1"


def _per_session(value: Any, sessions: int, what: str) -> list[Any]:
    """``value`` once per session: a sequence of K values as given, else K copies."""
    single = not isinstance(value, Sequence) or (
        what == "size" and len(value) == 2 and all(isinstance(v, int | np.integer) for v in value)
    )
    out = [value] * sessions if single else list(value)
    if len(out) != sessions:
        raise DataError(
            f"{what}={list(value)}: give one {what} per session ({sessions}) or a single one"
        )
    return out


def synthesize(
    out_dir: str | Path,
    *,
    sessions: int = 1,
    neurons: int | Sequence[int] = 96,
    frames: int | Sequence[int] = 48000,
    size: tuple[int, int] | Sequence[tuple[int, int]] = (36, 36),
    behavior: int | Sequence[int] = len(BEHAVIOR_NAMES),
    frame_rate: float = 60.0,
    seed: int = 0,
    num_lags: int | None = None,
) -> SynthResult:
    """Simulate sessions and write them, their truth files and ``oracle.json`` to ``out_dir``.

    Every file is written under a temporary name and renamed only once all sessions are done,
    so an error leaves no half-written file behind. Sessions are named ``sim00``, ``sim01``...;
    session k is drawn from ``numpy.random.default_rng([seed, k])``.

    Args:
        out_dir: the folder (created if needed).
        sessions: K sessions.
        neurons, frames, size, behavior: each session's units N, bins T, frame size (H, W) and
            behaviour channels written (the first of run_speed, pupil, eye_x, eye_y; 0 writes
            no behaviour); a single value for all, or a sequence of K values.
        frame_rate: bins per second.
        seed: the seed.
        num_lags: L of the sample bins the oracle is scored on (default ``DataConfig().num_lags``;
            :func:`oracle_bps` recomputes it for another L).

    Returns:
        What was written, with the oracle BPS.
    """
    counts = [int(n) for n in _per_session(neurons, sessions, "neurons")]
    lengths = [int(t) for t in _per_session(frames, sessions, "frames")]
    sizes = [(int(h), int(w)) for h, w in _per_session(size, sessions, "size")]
    channels = [int(k) for k in _per_session(behavior, sessions, "behavior")]
    if sessions < 1 or min(counts) < 1 or min(lengths) < 1:
        raise DataError(
            f"sessions={sessions}, neurons={neurons}, frames={frames}: each must be >= 1"
        )
    if min(min(hw) for hw in sizes) < 4:
        raise DataError(f"size={list(size)}: frames must be at least 4x4 pixels")
    if not all(0 <= k <= len(BEHAVIOR_NAMES) for k in channels):
        raise DataError(f"behavior={behavior}: 0 to {len(BEHAVIOR_NAMES)} channels per session")
    if not (frame_rate > 0 and math.isfinite(frame_rate)):
        raise DataError(f"frame_rate={frame_rate}: must be a positive number of bins per second")
    lags = num_lags if num_lags is not None else _default_data_config().num_lags
    out = Path(out_dir)
    (out / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    names = [f"sim{k:02d}" for k in range(sessions)]
    files = [out / f"{n}.h5" for n in names]
    truths = [out / TRUTH_DIR / f"{n}.h5" for n in names]
    oracle: dict[str, dict[str, float]] = {}
    rates_hz: dict[str, float] = {}
    with _staged([*files, *truths, out / ORACLE_FILE]) as tmp:
        for k, name in enumerate(names):
            s = simulate_session(
                name,
                neurons=counts[k],
                frames=lengths[k],
                size=sizes[k],
                frame_rate=frame_rate,
                seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]),
            )
            _write_session(tmp[k], s, behavior=channels[k])
            _write_truth(tmp[sessions + k], s, lags, seed)
            oracle[name] = _oracle_of(s.rates, s.robs, s.dfs, s.blocks, s.split, lags)
            rates_hz[name] = float(s.rates.mean() * s.frame_rate)
        tmp[-1].write_text(json.dumps(oracle, indent=2, allow_nan=True) + "\n")
    return SynthResult(
        out_dir=out,
        files=files,
        truth_files=truths,
        oracle=oracle,
        mean_rate_hz=rates_hz,
        num_lags=lags,
    )
