"""The project's training step, set up for timing on a synthetic session.

The step is the :class:`~vivit_hpo.training.Trainer`'s own: the Trainer is built on a synthetic
in-memory session (so its model, optimiser — fused AdamW on CUDA —, autocast choice,
``torch.compile`` wrapper and device-resident data path are exactly a trial's), and each step
runs ``Trainer.train_step`` for one batch followed by ``Trainer.optimizer_step``
(gradient clipping, the finiteness check, the learning-rate schedule, the update).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention import sdpa_kernel

from vivit_hpo.bench.backends import sdpa_pin
from vivit_hpo.config import RunConfig
from vivit_hpo.data import Batch, Session, SessionMeta, SessionSet, stimulus_stats
from vivit_hpo.data.clips import segments
from vivit_hpo.errors import ConfigError
from vivit_hpo.models import check_feasible, count_parameters, flops_per_sample
from vivit_hpo.models.attention import attention_backend
from vivit_hpo.models.encoder import clip_geometry
from vivit_hpo.models.vivit import tubelet_grid
from vivit_hpo.training import Trainer

__all__ = ["SYNTHETIC_SESSION", "Workload", "build_ours", "synthetic_session"]

SYNTHETIC_SESSION = "bench"
NUM_BATCHES = 3  # distinct input batches cycled through, as the reference does
_VAL_BINS = 8


@dataclass
class Workload:
    """One model's training step, ready to time.

    Attributes:
        name: "ours" or "reference".
        label: what is timed (the config file, or the reference's sizes).
        step: ``step(i)`` runs one full training step on input batch ``i % 3`` and returns the
            loss (a detached 0-d tensor on the device; reading it syncs).
        batch_size: samples per step.
        flops_per_sample: training FLOPs per sample counted from the model's shapes.
        num_params: parameter elements.
        info: anything else worth reporting (attention backend, token grid, ...).
        close: drops the input batches and gradients (drop the Workload itself to free the
            model and optimiser).
    """

    name: str
    label: str
    step: Callable[[int], torch.Tensor]
    batch_size: int
    flops_per_sample: float
    num_params: int
    info: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def synthetic_session(
    *,
    num_units: int,
    num_behavior: int,
    size: tuple[int, int, int],
    channels: int = 1,
    num_train: int,
    seed: int = 0,
) -> Session:
    """An in-memory session with random frames, Poisson counts and Gaussian behaviour.

    Args:
        num_units: N.
        num_behavior: K (0: no behaviour, the modulator then stays idle).
        size: (F, H, W): frames per clip and frame size.
        channels: C.
        num_train: training clips (one segment with exactly that many whole-clip starts); a
            validation segment of a few clips follows.
        seed: seed of the random content.

    Returns:
        A :class:`~vivit_hpo.data.Session` on the CPU with one block: a training segment of
        ``F - 1 + num_train`` bins, then a validation one of ``F - 1 + 8``.
    """
    frames, h, w = size
    n_train, n_val = frames - 1 + num_train, frames - 1 + _VAL_BINS
    num_bins = n_train + n_val
    gen = torch.Generator().manual_seed(seed)
    stim = torch.randint(0, 256, (num_bins, channels, h, w), dtype=torch.uint8, generator=gen)
    rates = torch.rand(num_bins, num_units, generator=gen) * 0.6
    robs = torch.poisson(rates, generator=gen)  # (T, N)
    dfs = torch.ones(num_bins, num_units, dtype=torch.bool)
    behavior = torch.randn(num_bins, num_behavior, generator=gen) if num_behavior else None
    blocks = np.zeros(num_bins, dtype=np.int64)
    split = np.zeros(num_bins, dtype=np.uint8)
    split[n_train:] = 1
    mean_rates = robs[:n_train].mean(0)
    stim_mean, stim_std = stimulus_stats(stim, np.arange(n_train))
    meta = SessionMeta(
        name=SYNTHETIC_SESSION,
        num_units=num_units,
        num_channels=channels,
        height=h,
        width=w,
        num_behavior=num_behavior,
        frame_rate=60.0,
        mean_rates=tuple(float(x) for x in mean_rates),
        stim_mean=stim_mean,
        stim_std=stim_std,
    )
    return Session(
        meta=meta,
        path=Path(f"<synthetic {SYNTHETIC_SESSION}>"),
        frames=stim,
        robs=robs,
        dfs=dfs,
        behavior=behavior,
        behavior_names=tuple(f"behavior_{i}" for i in range(num_behavior)),
        blocks=blocks,
        split=split,
        segments=segments(blocks, split),
    )


def bench_config(cfg: RunConfig, *, batch_size: int, frames: int, compile: bool) -> RunConfig:
    """``cfg`` with the bench's batch size, ``frames`` frames per sample, one optimiser step per
    batch, and compile.

    A config in the one-target-per-window mode gets ``num_lags = frames``; a config that trains
    on clips keeps its ``num_lags`` (at most ``frames``) and gets ``clip_frames = frames``.
    ``grad_accum`` is set to 1 so every timed step is a full forward, backward and update.
    """
    train = cfg.train.model_copy(
        update={"batch_size": batch_size, "grad_accum": 1, "compile": compile}
    )
    if cfg.data.clip_frames is None:
        update: dict[str, Any] = {"num_lags": frames}
    else:
        update = {"num_lags": min(cfg.data.num_lags, frames), "clip_frames": frames}
    data = cfg.data.model_copy(update=update)
    return cfg.model_copy(update={"train": train, "data": data})


def _time_gather(data: SessionSet, starts: np.ndarray, device: torch.device, repeats: int) -> float:
    """Mean ms of gathering one batch (clip indexing, uint8 -> float32, behaviour)."""
    data.batch(SYNTHETIC_SESSION, starts)  # warm-up
    if device.type == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(repeats):
            data.batch(SYNTHETIC_SESSION, starts)
        e1.record()
        torch.cuda.synchronize(device)
        return e0.elapsed_time(e1) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        data.batch(SYNTHETIC_SESSION, starts)
    return (time.perf_counter() - t0) * 1e3 / repeats


def build_ours(
    cfg: RunConfig,
    *,
    label: str,
    batch_size: int,
    input_size: tuple[int, int, int],
    num_units: int,
    num_behavior: int,
    device: torch.device,
    compile: bool,
    backend: str | None = None,
) -> Workload:
    """The project's training step for ``cfg`` on a synthetic session.

    Args:
        cfg: the run config (its model and train sections are used; batch size, lags, grad
            accumulation and compile are set by the bench, see :func:`bench_config`).
        label: how the table names this config.
        batch_size: B.
        input_size: (T, H, W) of one sample (a window of T lags, or a clip of T frames for a
            config that trains on clips; see :func:`bench_config`).
        num_units: N of the synthetic session.
        num_behavior: K of the synthetic session (> 0 runs the modulator).
        device: where to train.
        compile: wrap the model in ``torch.compile`` as ``train.compile: true`` does.
        backend: the bench ``--backend``; an ``sdpa-*`` value pins PyTorch's SDPA kernel around
            each step (the project's switch itself is set by the caller).

    Raises:
        ConfigError: the model cannot take inputs of this size.
    """
    frames, h, w = input_size
    channels = 1
    cfg = bench_config(cfg, batch_size=batch_size, frames=frames, compile=compile)
    geom = clip_geometry(cfg)  # the clip's frames, or num_lags for windows
    reason = check_feasible(cfg.model, (channels, geom.frames, h, w), num_lags=geom.num_lags)
    if reason is not None:
        raise ConfigError(f"--input {frames} {h} {w} with {label}: {reason}")
    input_shape = (channels, frames, h, w)
    session = synthetic_session(
        num_units=num_units,
        num_behavior=num_behavior,
        size=(frames, h, w),
        channels=channels,
        num_train=NUM_BATCHES * batch_size,
    )
    data = SessionSet(
        [session],
        cfg.data.num_lags,
        device_resident=cfg.data.device_resident,
        center=cfg.data.center,
    )
    trainer = Trainer(cfg, data, device=device, run_dir=None)
    starts = trainer.data.session(SYNTHETIC_SESSION).split_segments("train")[0, 0] + np.arange(
        NUM_BATCHES * batch_size
    )
    batch_starts = [starts[i * batch_size : (i + 1) * batch_size] for i in range(NUM_BATCHES)]
    batches: list[Batch] = [trainer.data.batch(SYNTHETIC_SESSION, b) for b in batch_starts]
    gather_ms = _time_gather(trainer.data, batch_starts[0], trainer.device, repeats=5)
    model, amp = trainer.model, trainer.amp
    pinned = sdpa_pin(backend)

    def step(i: int) -> torch.Tensor:
        # Exactly the Trainer's step with grad_accum = 1.
        batch = batches[i % NUM_BATCHES]
        pin = sdpa_kernel([pinned]) if pinned is not None else contextlib.nullcontext()
        with pin:
            loss = trainer.train_step(batch)
        trainer.optimizer_step()
        return loss

    probe_dtype = torch.bfloat16 if amp else torch.float32
    core = cfg.model.core
    head_dim = core.embed_dim // core.num_heads if core.kind == "vivit" else 1
    probe = torch.empty(0, 0, 0, head_dim, device=trainer.device, dtype=probe_dtype)
    info: dict[str, Any] = {
        "core": core.kind,
        "attention_backend": (
            (backend if pinned is not None else attention_backend(probe))
            if core.kind == "vivit"
            else None
        ),
        "amp": "bf16" if amp else "off",
        "fused_adamw": bool(trainer.optimizer.defaults.get("fused")),
        "gather_ms": gather_ms,
        "data_device": trainer.data.resident()[SYNTHETIC_SESSION],
        "num_units": num_units,
        "num_behavior": num_behavior,
        "modulator": model.modulator is not None,
        "targets_per_sample": trainer.clips.num_targets,
    }
    if core.kind == "vivit":
        info["token_grid"] = list(tubelet_grid(input_size, core.kernel_size, core.stride)[0])
        info["patch_dropout"] = core.patch_dropout
        info["drop_path"] = core.drop_path

    def close() -> None:
        # The caller drops the Workload (and with it the Trainer) and collects.
        batches.clear()
        trainer.optimizer.zero_grad(set_to_none=True)

    return Workload(
        name="ours",
        label=label,
        step=step,
        batch_size=batch_size,
        flops_per_sample=flops_per_sample(cfg.model, input_shape, num_lags=geom.num_lags),
        num_params=count_parameters(model),
        info=info,
        close=close,
    )
