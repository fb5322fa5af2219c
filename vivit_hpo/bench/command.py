"""The ``bench`` command, usable without the rest of the CLI.

``vivit-hpo bench`` registers :func:`bench` on the main app (``vivit_hpo/cli/bench.py``);
``python -m vivit_hpo.bench`` runs the same function on its own, importing neither Optuna nor
the database stack, so a bare GPU machine needs only torch, pydantic, typer and rich (see
``benchmarks/NOTES.md``). The options are defined here rather than taken from
``vivit_hpo.cli._common`` because importing that package imports every command group.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from vivit_hpo.bench.reference import default_reference_path
from vivit_hpo.bench.runner import DEFAULT_INPUT, BenchSettings, render_table, run_bench
from vivit_hpo.config import load_run_config
from vivit_hpo.training import resolve_device

__all__ = ["Backend", "bench"]


class Backend(str, Enum):
    auto = "auto"
    flash_attn = "flash-attn"
    sdpa = "sdpa"
    math = "math"
    sdpa_cudnn = "sdpa-cudnn"
    sdpa_efficient = "sdpa-efficient"
    sdpa_flash = "sdpa-flash"


def bench(
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
            help=f"T H W of one sample (default {' '.join(map(str, DEFAULT_INPUT))}).",
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
    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the whole table
        console = Console(width=150)
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
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
        console.print(f"report written to {json_path}")
