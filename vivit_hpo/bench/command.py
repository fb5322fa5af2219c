"""The ``bench step`` and ``bench clips`` commands, usable without the rest of the CLI.

``vivit-hpo bench step`` and ``vivit-hpo bench clips`` are :func:`step` and :func:`clips`
registered on the main app's ``bench`` group (``vivit_hpo/cli/bench.py``); ``python -m
vivit_hpo.bench step|clips`` runs the same functions on their own, importing neither Optuna nor
the database stack, so a bare GPU machine needs only torch, pydantic, typer and rich (see
``benchmarks/NOTES.md``).
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from vivit_hpo._io import atomic_write_text
from vivit_hpo._output import MISSING, Column, FitTable, count, fixed, grouped, percent, signed
from vivit_hpo.bench.reference import default_reference_path
from vivit_hpo.bench.runner import DEFAULT_INPUT, BenchSettings, render_table, run_bench
from vivit_hpo.config import load_run_config
from vivit_hpo.training import resolve_device

__all__ = ["Backend", "bench_app", "clips", "step"]


class Backend(str, Enum):
    auto = "auto"
    flash_attn = "flash-attn"
    sdpa = "sdpa"
    math = "math"
    sdpa_cudnn = "sdpa-cudnn"
    sdpa_efficient = "sdpa-efficient"
    sdpa_flash = "sdpa-flash"


def step(
    model: Annotated[
        list[Path],
        typer.Option(
            "--model", help="Run config YAML; repeat to bench several in one run (one ceiling)."
        ),
    ],
    batch: Annotated[
        int | None,
        typer.Option("--batch", min=1, help="Batch size (default: each config's batch_size)."),
    ] = None,
    input_size: Annotated[
        tuple[int, int, int] | None,
        typer.Option(
            "--input",
            help=f"T H W of one sample (default {' '.join(map(str, DEFAULT_INPUT))}): a window "
            "of T lags, or a clip of T frames for a config with data.clip_frames.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:i (auto: cuda if available).")
    ] = "auto",
    backend: Annotated[
        Backend | None,
        typer.Option(
            "--backend",
            help="Attention backend (sets VIVIT_HPO_ATTENTION for the run; default: as the "
            "environment says); sdpa-cudnn/efficient/flash pin one PyTorch SDPA kernel for "
            "both models.",
            show_default=False,
        ),
    ] = None,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (train.compile: true).")
    ] = False,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed steps.")] = 20,
    warmup: Annotated[
        int, typer.Option("--warmup", min=1, help="Warm-up steps, the first (compile) included.")
    ] = 5,
    units: Annotated[int, typer.Option("--units", min=1, help="Units of the session.")] = 256,
    behavior: Annotated[
        int, typer.Option("--behavior", min=0, help="Behaviour channels (0: no modulator).")
    ] = 2,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set model.core.embed_dim=256."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (JSON) here.")
    ] = None,
    reference: Annotated[
        bool,
        typer.Option("--reference", help="Also time the reference model; print ours/reference."),
    ] = False,
    reference_path: Annotated[
        Path | None,
        typer.Option(
            "--reference-path",
            help="ref_vivit_bench.py (default: $VIVIT_HPO_REFERENCE or "
            "../shared/reference/ beside the repository).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU intra-op threads (torch.set_num_threads); 1 is steadiest on a shared CPU.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        int,
        typer.Option(
            "--profile", min=0, help="Profile this many steps per model; top ops to the JSON."
        ),
    ] = 0,
) -> None:
    """Time the full training step (forward, backward, optimiser) of a model config."""
    console = _console()
    configs = [(str(p), load_run_config(p, list(overrides or []))) for p in model]
    settings = BenchSettings(
        device=resolve_device(device),
        batch_size=batch,
        input_size=tuple(input_size) if input_size else DEFAULT_INPUT,  # type: ignore[arg-type]
        num_units=units,
        num_behavior=behavior,
        backend=None if backend is None else backend.value,
        compile=compile,
        steps=steps,
        warmup=warmup,
        reference_path=(reference_path or default_reference_path()) if reference else None,
        profile_steps=profile,
    )
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        report = run_bench(configs, settings)
    finally:  # in-process callers (tests) keep their own setting
        torch.set_num_threads(old_threads)
    console.print(render_table(report))
    for row in report["results"]:
        for name in ("ours_profile", "reference_profile"):
            if row.get(name):
                top = row[name]["top"][:10]
                console.print(f"[bold]{row['config']} {name}[/bold] (top ops, ms per step)")
                for op in top:
                    key = (
                        "self_device_ms_per_step"
                        if "device" in row[name]["sort"]
                        else "self_cpu_ms_per_step"
                    )
                    console.print(f"  {op[key]:9.3f}  {op['pct']:5.1f}%  {op['name']}")
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=1))
        console.print(f"report written to {json_path}")


def clips(
    model: Annotated[Path, typer.Option("--model", help="Run config YAML.")],
    data: Annotated[
        list[Path],
        typer.Option("--data", help="A session file (*.h5) or a folder of them; repeatable."),
    ],
    clip_frames: Annotated[
        list[int] | None,
        typer.Option(
            "--clip-frames",
            min=1,
            help="Frames per clip of a clip mode; repeatable (default: the config's "
            "data.clip_frames, else 4 x num_lags).",
            show_default=False,
        ),
    ] = None,
    clip_batch_size: Annotated[
        int | None,
        typer.Option(
            "--clip-batch-size",
            min=1,
            help="Clips per batch in the clip modes (default: the config's batch_size).",
            show_default=False,
        ),
    ] = None,
    budget_s: Annotated[
        float, typer.Option("--budget-s", min=1, help="Training seconds per mode.")
    ] = 300.0,
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Checkpoints (epochs) per mode.")
    ] = 8,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:i (auto: cuda if available).")
    ] = "auto",
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set train.batch_size=32."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU intra-op threads.", show_default=False),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (JSON) here.")
    ] = None,
) -> None:
    """Train one config as windows and as clips for the same time; compare test BPS."""
    from vivit_hpo.bench.modes import run_modes

    console = _console()
    cfg = load_run_config(model, list(overrides or []))
    frames = list(clip_frames or [cfg.data.clip_frames or 4 * cfg.data.num_lags])
    if threads is not None:
        torch.set_num_threads(threads)
    dev = str(resolve_device(device))
    report = run_modes(
        cfg,
        data,
        clip_frames=frames,
        clip_batch_size=clip_batch_size,
        budget_s=budget_s,
        epochs=epochs,
        device=dev,
        log=console.print,
    )
    rows = report["results"]
    window = rows[0]
    table = FitTable(
        [
            Column("mode", priority=10, wrap=True),
            Column("targets/clip", "right", priority=2),
            Column("clips/s", "right", priority=3),
            Column("bins/s", "right", priority=4),
            Column("train s", "right", priority=1),
            Column("test BPS", "right", priority=9),
            Column("/ oracle", "right", priority=8),
            Column("s to windows' final", "right", priority=5),
            Column("test BPS at windows' s", "right", priority=7),
            Column("x windows", "right", priority=6),
        ],
        title=f"{model}: windows against clips, {budget_s:.0f} training seconds each on {dev} "
        f"({report['threads']} threads)",
    )
    base = window["final_test_bps"]
    for r in rows:
        oracle = r["oracle_test_bps"]
        reach = r["seconds_to_window_final"]
        at = r["test_bps_at_window_time"]
        table.add_row(
            r["mode"],
            count(r["targets_per_clip"]),
            grouped(r["samples_per_s"]),
            grouped(r["bins_per_s"]),
            fixed(r["train_seconds"][-1], 0),
            signed(r["final_test_bps"]),
            percent(r["final_test_bps"] / oracle, 1) if oracle else MISSING,
            "never" if reach is None else fixed(reach, 0),
            signed(at),
            fixed(at / base, 2) if at is not None and base > 0 else MISSING,
        )
    console.print(table)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=1))
        console.print(f"report written to {json_path}")


def _console() -> Console:
    """The terminal's console; a log or a pipe gets a wide one for the whole table, unless
    ``COLUMNS`` says how wide."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(width=150)


def bench_app() -> typer.Typer:
    """The ``bench`` commands that need only torch: ``step`` and ``clips``."""
    app = typer.Typer(
        no_args_is_help=True,
        help="Benchmarks: the training step, clips against windows, search strategies, chaos.",
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.command("step")(step)
    app.command("clips")(clips)
    return app
