"""Run the training-step benchmark: ceiling, our step, the reference's step, a table and JSON.

Everything in one report comes from one process on one device, so ours/reference ratios and
the percent of the matrix ceiling are like-for-like (see ``../shared/performance.md``: a speed
figure counts only as a ratio from one run, or as an absolute figure on the GPU).
"""

from __future__ import annotations

import gc
import math
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vivit_hpo._output import Column, FitTable, compact, count, fixed, grouped
from vivit_hpo.bench.backends import attention_override
from vivit_hpo.bench.reference import build_reference, load_reference
from vivit_hpo.bench.timing import Ceiling, PeakMemory, matmul_ceiling, synchronize, time_steps
from vivit_hpo.bench.workload import Workload, build_ours
from vivit_hpo.config import RunConfig, ViViTConfig
from vivit_hpo.errors import ConfigError
from vivit_hpo.models.attention import flash_attn_available

__all__ = [
    "DEFAULT_INPUT",
    "SCHEMA",
    "BenchSettings",
    "measure",
    "profile_workload",
    "render_table",
    "run_bench",
]

SCHEMA = "vivit-hpo-bench/1"
DEFAULT_INPUT = (32, 64, 64)  # the roadmap's (T, H, W) benchmark input
METRIC_KEYS = (
    "samples_per_s",
    "bins_per_s",
    "ms_per_step",
    "median_ms_per_step",
    "tflops",
    "pct_of_ceiling",
    "flops_per_sample",
    "peak_memory_mb",
    "first_step_s",
    "warmup_s",
)


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run times.

    Attributes:
        device: where to train.
        batch_size: B; None takes each config's ``train.batch_size``.
        input_size: (T, H, W) of one sample.
        num_units: N of the synthetic session.
        num_behavior: K of the synthetic session (> 0 runs the modulator).
        backend: attention backend override (``auto``, ``flash-attn``, ``sdpa``, ``math``, or
            ``sdpa-cudnn|efficient|flash`` to pin one SDPA kernel, see
            :mod:`vivit_hpo.bench.backends`); None leaves ``VIVIT_HPO_ATTENTION`` as the
            environment sets it.
        compile: ``torch.compile`` both models.
        steps: timed steps.
        warmup: warm-up steps, the first (compile) step included.
        reference_path: the reference file to run side by side; None runs ours alone.
        profile_steps: > 0 profiles that many steps of each model after timing.
    """

    device: torch.device
    batch_size: int | None = None
    input_size: tuple[int, int, int] = DEFAULT_INPUT
    num_units: int = 256
    num_behavior: int = 2
    backend: str | None = None
    compile: bool = False
    steps: int = 20
    warmup: int = 5
    reference_path: Path | None = None
    profile_steps: int = 0


def measure(workload: Workload, settings: BenchSettings, ceiling: Ceiling) -> dict[str, Any]:
    """Time ``workload`` and derive samples/s, TFLOP/s, percent of ceiling and peak memory.

    Returns:
        A JSON-ready dict: the :data:`METRIC_KEYS`, ``memory_kind``, ``num_params``, the final
        ``loss``, ``step_ms`` (every timed step) and the workload's ``info``.
    """
    memory = PeakMemory(settings.device)
    last: list[torch.Tensor] = []

    def step(i: int) -> None:
        loss = workload.step(i)
        if last:
            last[0] = loss
        else:
            last.append(loss)

    timing = time_steps(
        step,
        steps=settings.steps,
        warmup=settings.warmup,
        device=settings.device,
        before_timing=memory.reset,
    )
    peak = memory.peak_mb()
    loss = float(last[0])
    ms = timing.mean_ms
    flops = workload.flops_per_sample * workload.batch_size
    tflops = flops / (ms / 1e3) / 1e12
    return {
        "label": workload.label,
        "batch_size": workload.batch_size,
        "samples_per_s": workload.batch_size / (ms / 1e3),
        "bins_per_s": workload.batch_size * workload.info.get("targets_per_sample", 1) / (ms / 1e3),
        "ms_per_step": ms,
        "median_ms_per_step": timing.median_ms,
        "tflops": tflops,
        "pct_of_ceiling": 100.0 * tflops / ceiling.tflops,
        "flops_per_sample": workload.flops_per_sample,
        "peak_memory_mb": peak,
        "memory_kind": memory.kind,
        "first_step_s": timing.first_step_s,
        "warmup_s": timing.warmup_s,
        "num_params": workload.num_params,
        "loss": loss,
        "loss_finite": math.isfinite(loss),
        "step_ms": list(timing.step_ms),
        "window_unix": list(timing.window),
        **workload.info,
    }


def profile_workload(
    workload: Workload, device: torch.device, steps: int, start: int = 10_000
) -> dict[str, Any]:
    """Profile ``steps`` training steps with ``torch.profiler``.

    Returns:
        ``{"sort": ..., "table": text, "top": [{name, calls, self_cpu_ms, self_device_ms,
        pct}]}`` with the 30 ops of largest self time (device time on CUDA, CPU time on the
        CPU), per step.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for i in range(steps):
            workload.step(start + i)
        synchronize(device)
    averages = prof.key_averages()
    on_device = device.type == "cuda"
    sort = "self_device_time_total" if on_device else "self_cpu_time_total"
    events = sorted(averages, key=lambda e: getattr(e, sort), reverse=True)
    total = sum(getattr(e, sort) for e in events) or 1.0
    top = [
        {
            "name": e.key,
            "calls_per_step": e.count / steps,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "self_device_ms_per_step": e.self_device_time_total / 1e3 / steps,
            "pct": 100.0 * getattr(e, sort) / total,
        }
        for e in events[:30]
    ]
    return {
        "sort": sort,
        "steps": steps,
        "table": averages.table(sort_by=sort, row_limit=30),
        "top": top,
    }


def _free(workload: Workload, device: torch.device) -> None:
    workload.close()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "flash_attn": flash_attn_available(),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            device_memory_gb=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return env


def run_bench(configs: Sequence[tuple[str, RunConfig]], settings: BenchSettings) -> dict[str, Any]:
    """Bench each config (and the reference beside it) in this process.

    Args:
        configs: (label, run config) pairs; each is timed in turn, its memory freed before the
            next (and before its reference).
        settings: see :class:`BenchSettings`.

    Returns:
        The report (JSON-ready): ``schema``, ``date``, ``environment``, ``ceiling``,
        ``settings`` and ``results``, one per config with ``ours``, ``reference`` (or None)
        and ``ratio`` (ours / reference: samples/s, TFLOP/s, peak memory; or None).

    Raises:
        ConfigError: a config cannot take the input, the reference file is missing, a
            reference is asked for a CNN config, or the backend cannot run here.
    """
    if not configs:
        raise ConfigError("no config to bench; pass --model CONFIG.yaml")
    device = settings.device
    if settings.reference_path is not None:
        for label, cfg in configs:
            if not isinstance(cfg.model.core, ViViTConfig):
                raise ConfigError(
                    f"--reference compares ViViT cores, {label} has a {cfg.model.core.kind} core; "
                    "drop --reference for it"
                )
    reference = (
        load_reference(settings.reference_path, device)
        if settings.reference_path is not None
        else None
    )
    ceiling = matmul_ceiling(device)
    results: list[dict[str, Any]] = []
    with attention_override(settings.backend):
        for label, cfg in configs:
            batch = settings.batch_size or cfg.train.batch_size
            ours = build_ours(
                cfg,
                label=label,
                batch_size=batch,
                input_size=settings.input_size,
                num_units=settings.num_units,
                num_behavior=settings.num_behavior,
                device=device,
                compile=settings.compile,
                backend=settings.backend,
            )
            row: dict[str, Any] = {"config": label, "ours": measure(ours, settings, ceiling)}
            if settings.profile_steps:
                row["ours_profile"] = profile_workload(ours, device, settings.profile_steps)
            _free(ours, device)
            del ours
            row["reference"] = row["ratio"] = None
            if reference is not None:
                assert isinstance(cfg.model.core, ViViTConfig)
                ref = build_reference(
                    reference,
                    cfg.model.core,
                    batch_size=batch,
                    input_size=settings.input_size,
                    num_units=settings.num_units,
                    device=device,
                    compile=settings.compile,
                    backend=settings.backend,
                )
                row["reference"] = measure(ref, settings, ceiling)
                if settings.profile_steps:
                    row["reference_profile"] = profile_workload(ref, device, settings.profile_steps)
                _free(ref, device)
                del ref
                o, r = row["ours"], row["reference"]
                row["ratio"] = {
                    "samples_per_s": o["samples_per_s"] / r["samples_per_s"],
                    "tflops": o["tflops"] / r["tflops"],
                    "peak_memory": o["peak_memory_mb"] / r["peak_memory_mb"],
                }
            results.append(row)
    s = asdict(settings)
    s["device"] = str(device)
    s["input_size"] = list(settings.input_size)
    s["reference_path"] = None if settings.reference_path is None else str(settings.reference_path)
    return {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "environment": _environment(device),
        "ceiling": asdict(ceiling),
        "settings": s,
        "results": results,
    }


def render_table(report: dict[str, Any]) -> FitTable:
    """The report as a table: one row per model per config."""
    env, s, ceiling = report["environment"], report["settings"], report["ceiling"]
    mode = "compiled" if s["compile"] else "eager"
    t, h, w = s["input_size"]
    table = FitTable(
        [
            Column("model", priority=12),
            Column("config", priority=11, wrap=True),
            Column("B", "right", priority=3),
            Column("samples/s", "right", priority=10),
            Column("bins/s", "right", priority=4),
            Column("ms/step", "right", priority=9),
            Column("TFLOP/s", "right", priority=5),
            Column("% ceiling", "right", priority=8),
            Column("peak MiB", "right", priority=7),
            Column("first step s", "right", priority=1),
            Column("speed ours/ref", "right", priority=6),
            Column("mem ours/ref", "right", priority=2),
        ],
        title=f"training step on {env['device_name']} ({env['device']}): input (B, 1, {t}, {h}, "
        f"{w}), {mode}, attention {s['backend'] or 'env/auto'}",
        caption=f"ceiling: {ceiling['label']} = {ceiling['tflops']:.3g} TFLOP/s, measured in "
        "this run; memory: "
        + ("CUDA max allocated" if env["device"].startswith("cuda") else "process peak RSS (CPU)"),
    )
    for row in report["results"]:
        for name in ("ours", "reference"):
            m = row[name]
            if m is None:
                continue
            speed = mem = ""
            if name == "ours" and row["ratio"] is not None:
                speed = f"{fixed(row['ratio']['samples_per_s'], 2)}x"
                mem = f"{fixed(row['ratio']['peak_memory'], 2)}x"
            table.add_row(
                name,
                m["label"],
                count(m["batch_size"]),
                compact(m["samples_per_s"]),
                compact(m.get("bins_per_s", m["samples_per_s"])),
                fixed(m["ms_per_step"], 2),
                compact(m["tflops"]),
                fixed(m["pct_of_ceiling"], 1),
                grouped(m["peak_memory_mb"]),
                fixed(m["first_step_s"], 2),
                speed,
                mem,
            )
    return table
