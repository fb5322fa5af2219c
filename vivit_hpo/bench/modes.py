"""Clips against one target per window: the same model config, the same data, the same time.

``vivit-hpo bench clips --model CONFIG --data DIR --budget-s 300`` trains the config once per
mode (windows, then clips of each ``--clip-frames``) on the same sessions for the same budget of
training-step seconds, and scores the test split after every epoch. Each mode's schedule is
sized to its budget: a few calibration steps measure its seconds per step, and the run gets the
number of steps that fit (warm-up and cosine decay then end with the budget, as they would for a
user with that much time). Validation and the benchmark's own test scoring are left out of the
budget; the modes are calibrated taking turns, so that all see the same load. The table gives,
per mode: target bins trained per second, the test BPS reached, its
fraction of the oracle (simulated data), the training seconds each mode took to reach the
window mode's final test BPS, and its test BPS after the window mode's training time (the two
can differ from the budget where the machine's load changed between calibration and run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vivit_hpo.config import RunConfig
from vivit_hpo.data import SessionSet, load_sessions, oracle_bps
from vivit_hpo.training import Trainer, evaluate

__all__ = ["ModeResult", "calibrate", "run_modes", "time_to_reach", "value_at"]

SCHEMA = "vivit-hpo-bench-clips/1"


@dataclass
class ModeResult:
    """One mode's run: its throughput and its test BPS curve against training seconds."""

    mode: str
    clip_frames: int
    targets_per_clip: int
    steps: int
    seconds_per_step: float
    bins_per_s: float
    samples_per_s: float
    train_seconds: list[float] = field(default_factory=list)  # cumulative, after each epoch
    test_bps: list[float] = field(default_factory=list)  # after each epoch
    val_bps: list[float] = field(default_factory=list)
    oracle_test_bps: float | None = None
    seconds_to_window_final: float | None = None
    test_bps_at_window_time: float | None = None

    @property
    def final_test_bps(self) -> float:
        return self.test_bps[-1] if self.test_bps else math.nan


def time_to_reach(seconds: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The first time a curve reaches ``target``, interpolated linearly between checkpoints
    (from (0, -inf) before the first); None if it never does."""
    prev_t, prev_v = 0.0, -math.inf
    for t, v in zip(seconds, values, strict=True):
        if v >= target:
            if not math.isfinite(prev_v) or v == prev_v:
                return t
            return prev_t + (t - prev_t) * (target - prev_v) / (v - prev_v)
        prev_t, prev_v = t, v
    return None


def value_at(seconds: Sequence[float], values: Sequence[float], t: float) -> float | None:
    """A curve's value at time ``t``, interpolated linearly between checkpoints; the last value
    past its end; None before its first checkpoint."""
    if not seconds or t < seconds[0]:
        return None
    if t >= seconds[-1]:
        return values[-1]  # exactly: interpolating onto an end point can be one ulp off
    for (t0, v0), (t1, v1) in zip(
        zip(seconds, values, strict=True), zip(seconds[1:], values[1:], strict=True), strict=False
    ):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    raise AssertionError("unreachable: t lies within the checkpoints")


def _mode_config(
    cfg: RunConfig, clip_frames: int | None, steps: int, epochs: int, batch_size: int | None
) -> RunConfig:
    data = cfg.data.model_copy(update={"clip_frames": clip_frames})
    train = cfg.train.model_copy(
        update={
            "epochs": epochs,
            "steps_per_epoch": max(1, steps // epochs),
            "grad_accum": 1,
            "early_stopping_patience": None,
            "batch_size": batch_size or cfg.train.batch_size,
        }
    )
    return cfg.model_copy(update={"data": data, "train": train})


def calibrate(
    cfgs: Sequence[RunConfig], data: SessionSet, device: str, rounds: int = 5, steps: int = 4
) -> list[float]:
    """Seconds per training step of each config on ``data``: after 3 warm-up steps each, the
    modes take turns for ``rounds`` rounds of ``steps`` steps, and each gets its fastest round.
    Taking turns puts every mode under the same load of a shared machine, and the fastest round
    keeps a passing spike from shrinking a schedule."""
    trainers = [Trainer(cfg, data, device=device, run_dir=None) for cfg in cfgs]
    streams = []
    for trainer, cfg in zip(trainers, cfgs, strict=True):
        trainer.model.train()
        batches = trainer.data.batches(
            "train", cfg.train.batch_size, shuffle=True, seed=12345, steps=3 + rounds * steps
        )
        streams.append(iter(batches))

    def run(k: int, n: int) -> float:
        trainer = trainers[k]
        start = time.perf_counter()
        for _ in range(n):
            trainer.train_step(next(streams[k]))
            trainer.optimizer_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        return (time.perf_counter() - start) / n

    for k in range(len(trainers)):
        run(k, 3)
    best = [math.inf] * len(trainers)
    for _ in range(rounds):
        for k in range(len(trainers)):
            best[k] = min(best[k], run(k, steps))
    return best


def run_modes(
    cfg: RunConfig,
    data_paths: Sequence[Path],
    *,
    clip_frames: Sequence[int],
    clip_batch_size: int | None = None,
    budget_s: float,
    epochs: int,
    device: str,
    log: Any = print,
) -> dict[str, Any]:
    """Train ``cfg`` as windows and as clips of each ``clip_frames`` (batches of
    ``clip_batch_size`` clips, default the config's) for ``budget_s`` training seconds each;
    returns the JSON-ready report (see the module docstring)."""
    data = load_sessions(data_paths, cfg.data)
    oracle: dict[str, float] = {}
    for folder in {p if p.is_dir() else p.parent for p in data_paths}:
        for name, per_split in (oracle_bps(folder, cfg.data) or {}).items():
            if "test" in per_split:
                oracle[name] = float(per_split["test"])
    oracle_mean = (
        float(np.mean([oracle[n] for n in data.names]))
        if oracle.keys() >= set(data.names)
        else None
    )
    results: list[ModeResult] = []
    modes = [
        (frames, None if frames is None else clip_batch_size) for frames in [None, *clip_frames]
    ]
    per_steps = calibrate([_mode_config(cfg, f, 1, 1, b) for f, b in modes], data, device)
    for (frames, batch), per_step in zip(modes, per_steps, strict=True):
        steps = max(epochs, int(budget_s / per_step))
        run_cfg = _mode_config(cfg, frames, steps, epochs, batch)
        trainer = Trainer(run_cfg, data, device=device, run_dir=None)
        clips = trainer.clips
        res = ModeResult(
            mode="windows"
            if clips.is_window
            else f"clips of {clips.frames} x {run_cfg.train.batch_size}",
            clip_frames=clips.frames,
            targets_per_clip=clips.num_targets,
            steps=trainer.total_steps,
            seconds_per_step=per_step,
            bins_per_s=0.0,
            samples_per_s=0.0,
            oracle_test_bps=oracle_mean,
        )
        log(
            f"{res.mode}: {per_step * 1e3:.0f} ms per step of {run_cfg.train.batch_size}, "
            f"{trainer.total_steps} steps in the {budget_s:.0f} s budget"
        )
        total, bins, clips_seen = 0.0, 0.0, 0.0
        for report in trainer.epochs():
            total += report.train_seconds
            bins += report.bins_per_s * report.train_seconds
            clips_seen += report.samples_per_s * report.train_seconds
            scores = evaluate(trainer.eval_model, trainer.data, "test", run_cfg.train.batch_size)
            test = float(np.mean([s.bps for s in scores.values()]))
            res.train_seconds.append(total)
            res.test_bps.append(test)
            res.val_bps.append(report.val_bps)
            val = report.val_bps
            log(f"  epoch {report.epoch}: {total:.0f} s, val {val:+.4f}, test {test:+.4f}")
        res.bins_per_s, res.samples_per_s = bins / total, clips_seen / total
        results.append(res)
    target, window_s = results[0].final_test_bps, results[0].train_seconds[-1]
    for res in results:
        res.seconds_to_window_final = time_to_reach(res.train_seconds, res.test_bps, target)
        res.test_bps_at_window_time = value_at(res.train_seconds, res.test_bps, window_s)
    return {
        "schema": SCHEMA,
        "config": cfg.to_dict(),
        "data": [str(p) for p in data_paths],
        "budget_s": budget_s,
        "epochs": epochs,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "results": [{**asdict(r), "final_test_bps": r.final_test_bps} for r in results],
    }
