"""Timing a training step, the matrix ceiling it is compared with, and peak memory.

On CUDA every step is bracketed by CUDA events (no host sync inside the timed window, so the
host can run ahead exactly as in training); on the CPU by ``time.perf_counter`` (CPU work is
synchronous). Warm-up steps come first and are timed apart: the first one holds one-off costs
(CUDA context, cuBLAS handles, ``torch.compile``), paid once per trial.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "Ceiling",
    "PeakMemory",
    "StepTiming",
    "matmul_ceiling",
    "synchronize",
    "time_steps",
]

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepTiming:
    """Times of one workload's steps.

    Attributes:
        step_ms: (steps,) milliseconds of each timed step, after warm-up.
        first_step_s: wall seconds of the first step (one-off costs and compilation included).
        warmup_s: wall seconds of all warm-up steps, the first included.
        window: (start, end) Unix time of the timed window, end after the device finished
            (to check that concurrent bench processes overlapped, see benchmarks/NOTES.md).
    """

    step_ms: tuple[float, ...]
    first_step_s: float
    warmup_s: float
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def mean_ms(self) -> float:
        """Mean ms/step over the timed window (the reference benchmark's figure)."""
        return sum(self.step_ms) / len(self.step_ms)

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.step_ms))


def time_steps(
    step: Callable[[int], object],
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    before_timing: Callable[[], None] | None = None,
) -> StepTiming:
    """Run ``warmup`` untimed-for-throughput steps, then time ``steps`` steps.

    Args:
        step: ``step(i)`` runs training step ``i`` (0-based over warm-up and timed steps).
        steps: timed steps (>= 1).
        warmup: warm-up steps (>= 1); the first of them is reported as ``first_step_s``.
        device: where the step runs (CUDA: event timing; CPU: perf_counter).
        before_timing: called between warm-up and the timed window (resets peak memory).

    Returns:
        The :class:`StepTiming`.
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps={steps} and warmup={warmup} must both be >= 1")
    synchronize(device)
    t0 = time.perf_counter()
    step(0)
    synchronize(device)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        step(i)
    synchronize(device)
    warm = time.perf_counter() - t0
    if before_timing is not None:
        before_timing()
    per_step: list[float] = []
    window_start = time.time()
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            step(warmup + i)
            events[i + 1].record()
        synchronize(device)
        per_step = [events[i].elapsed_time(events[i + 1]) for i in range(steps)]
    else:
        for i in range(steps):
            t = time.perf_counter()
            step(warmup + i)
            per_step.append((time.perf_counter() - t) * 1e3)
    return StepTiming(
        step_ms=tuple(per_step),
        first_step_s=first,
        warmup_s=warm,
        window=(window_start, time.time()),
    )


@dataclass(frozen=True)
class Ceiling:
    """A matrix-multiply throughput measured on the device, the yardstick for TFLOP/s.

    Attributes:
        tflops: measured TFLOP/s of an ``size x size x size`` product.
        dtype: "bfloat16" on CUDA, "float32" on the CPU.
        size: the matrix size.
        label: how the table names it.
    """

    tflops: float
    dtype: str
    size: int
    label: str


def matmul_ceiling(
    device: torch.device, size: int | None = None, repeats: int | None = None
) -> Ceiling:
    """Measure the matrix ceiling the way the reference benchmark does.

    CUDA: a bf16 ``8192^2 @ 8192^2`` product, 3 warm-ups, 10 timed with events. CPU: a float32
    product (1024, 5 timed, so CI stays quick), timed with perf_counter; on the CPU this is a
    float32 ceiling, not a bf16 one, and the table says so. Random inputs, never zeros (zeros
    run faster than real data on some GPUs).

    Args:
        device: the device to measure.
        size: matrix size; None for 8192 on CUDA, 1024 on the CPU.
        repeats: timed products; None for 10 on CUDA, 5 on the CPU.

    Returns:
        The :class:`Ceiling`.
    """
    if device.type == "cuda":
        n, dtype, repeats = size or 8192, torch.bfloat16, repeats or 10
    else:
        n, dtype, repeats = size or 1024, torch.float32, repeats or 5
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    synchronize(device)
    if device.type == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(repeats):
            a @ b
        e1.record()
        synchronize(device)
        seconds = e0.elapsed_time(e1) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = time.perf_counter() - t0
    tflops = 2 * n**3 * repeats / seconds / 1e12
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    where = "CUDA" if device.type == "cuda" else "CPU"
    return Ceiling(
        tflops=tflops,
        dtype=str(dtype).removeprefix("torch."),
        size=n,
        label=f"{name} matmul {n}^3 ({where})",
    )


def _vm_hwm_bytes() -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory over a window: CUDA's allocator peak, or the process's peak RSS on the CPU.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only,
    as the reference reports). CPU: Linux's ``VmHWM`` after resetting it through
    ``/proc/self/clear_refs`` (the whole process's resident set: interpreter, libraries, model and
    activations). Where that reset is refused the figure is the peak since the process started
    (``ru_maxrss``), and :attr:`kind` says so.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _PROC_CLEAR_REFS.write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
            self.kind = "process_peak_rss"
        except OSError:
            self.kind = "process_peak_rss_since_start"

    def peak_mb(self) -> float:
        """Peak since the last :meth:`reset`, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _vm_hwm_bytes() if self.kind == "process_peak_rss" else None
        if hwm is not None:
            return hwm / 2**20
        self.kind = "process_peak_rss_since_start"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / (2**20 if sys.platform == "darwin" else 2**10)
